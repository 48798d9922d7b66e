# shellcheck shell=bash
# What scripts/sbom.sh lists for a Node.js app: every package installed in the image's
# node_modules, from npm's record of that tree (node_modules/.package-lock.json, what `npm sbom`
# reads too), by the image's own Node. Sourced, never run.

# installed_packages IMAGE: "npm NAME VERSION" per line (tab-separated).
installed_packages() {
	docker run --rm --network none --read-only --cap-drop ALL --security-opt no-new-privileges:true \
		--workdir /app --entrypoint node "$1" -e '
const fs = require("fs");
const lock = ["node_modules/.package-lock.json", "package-lock.json"].find((f) => fs.existsSync(f));
if (!lock) { console.error("no node_modules/.package-lock.json or package-lock.json in /app"); process.exit(1); }
for (const [path, pkg] of Object.entries(JSON.parse(fs.readFileSync(lock, "utf8")).packages || {})) {
  if (!path.startsWith("node_modules/") || pkg.dev || pkg.link || !pkg.version) continue;
  console.log(["npm", pkg.name || path.slice(path.lastIndexOf("node_modules/") + 13), pkg.version].join("\t"));
}
'
}
