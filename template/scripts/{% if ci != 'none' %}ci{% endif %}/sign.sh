#!/usr/bin/env bash
# CI stage "sign": a keyless cosign signature of IMAGE@DIGEST (the pipeline's OIDC identity: GitHub
# Actions' id-token, GitLab's SIGSTORE_ID_TOKEN), and its CycloneDX SBOM as a signed attestation.
# scripts/deploy.sh verifies the signature where env/ENV.env sets SIGNING_IDENTITY.
#   scripts/ci/sign.sh IMAGE@DIGEST
set -Eeuo pipefail
# shellcheck source=../lib/common.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/../lib/common.sh"

[[ $# -eq 1 && $1 =~ @sha256:[0-9a-f]{64}$ ]] || die "usage: scripts/ci/sign.sh IMAGE@DIGEST (a signature names a digest, never a tag)"
image=$1
require_cmd cosign "install cosign (https://docs.sigstore.dev), as the pipeline does"
sbom=$PROJECT_ROOT/.ci-reports/sbom.cdx.json
[[ -s $sbom ]] || die "no SBOM at .ci-reports/sbom.cdx.json: run scripts/ci/scan.sh $image first"
cosign sign --yes "$image" || die "cosign could not sign $image"
cosign attest --yes --type cyclonedx --predicate "$sbom" "$image" || die "cosign could not attach the SBOM to $image"
log "signed $image and attested its SBOM"
