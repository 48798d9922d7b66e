# shellcheck shell=bash
# What scripts/sbom.sh lists for a Python app: every distribution installed in the image's
# virtualenv (importlib.metadata, run by the image's own Python). Sourced, never run.

# installed_packages IMAGE: "pypi NAME VERSION" per line (tab-separated, NAME normalised: PEP 503).
installed_packages() {
	docker run --rm --network none --read-only --cap-drop ALL --security-opt no-new-privileges:true \
		--entrypoint python "$1" -c '
import importlib.metadata, re
for dist in importlib.metadata.distributions():
    name = re.sub(r"[-_.]+", "-", dist.metadata["Name"]).lower()
    print("pypi", name, dist.version, sep="\t")
'
}
