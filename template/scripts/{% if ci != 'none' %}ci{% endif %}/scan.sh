#!/usr/bin/env bash
# CI stage "scan": Trivy on the image (vulnerabilities, secrets, misconfigurations) and on this
# repository (Dockerfile, compose and other configuration, secrets), a CycloneDX SBOM of the image,
# then scripts/ci/scan-gate.py decides: fixable HIGH/CRITICAL, any secret, or a failed HIGH/CRITICAL
# check fails the stage unless .trivyignore accepts it (with a reason and an expiry).
#   scripts/ci/scan.sh IMAGE@DIGEST          reports in .ci-reports/
# Settings: SCAN_FAIL_ON [HIGH,CRITICAL], SCAN_IGNORE_MAX_DAYS [180] (scan-gate.py).
set -Eeuo pipefail
# shellcheck source=../lib/common.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/../lib/common.sh"

[[ $# -eq 1 && $1 == *@sha256:* ]] || die "usage: scripts/ci/scan.sh IMAGE@DIGEST (scan what is deployed: by digest)"
image=$1
require_cmd trivy "install Trivy (https://trivy.dev), as the pipeline does"
require_cmd python3 "install Python 3 (scripts/ci/scan-gate.py)"
reports=$PROJECT_ROOT/.ci-reports
mkdir -p "$reports"
cd "$PROJECT_ROOT"
ignore=()
[[ -f .trivyignore ]] && ignore=(--ignorefile .trivyignore)
log "Trivy: image $image"
trivy image --quiet --scanners vuln,secret,misconfig "${ignore[@]}" --format json --output "$reports/image.json" "$image" ||
	die "Trivy could not scan $image"
log "Trivy: repository configuration and secrets"
trivy fs --quiet --scanners misconfig,secret "${ignore[@]}" --skip-dirs .ci-tools --skip-dirs .ci-reports \
	--format json --output "$reports/repository.json" . || die "Trivy could not scan the repository"
log "Trivy: CycloneDX SBOM of $image"
trivy image --quiet --format cyclonedx --output "$reports/sbom.cdx.json" "$image" || die "Trivy could not make the SBOM"
python3 "$PROJECT_ROOT/scripts/ci/scan-gate.py" --ignorefile .trivyignore --metrics "$reports/scan.prom" \
	"$reports/image.json" "$reports/repository.json" || die "the scan found what must be fixed first (BLOCK lines above)"
