// Validates custom resources (a JSON list on stdin) against the schemas of their operator's
// CRDs, as @kubernetes-models generates them; exits non-zero naming each invalid or unknown one.
import { readFileSync } from 'node:fs';
// API group -> the package with its operator's models.
const PACKAGES = {
  'monitoring.coreos.com': '@kubernetes-models/prometheus-operator',
  'postgresql.cnpg.io': '@kubernetes-models/cloudnative-pg',
};
const docs = JSON.parse(readFileSync(0, 'utf8'));
let failed = 0;
for (const doc of docs) {
  const [group, version] = doc.apiVersion.split('/');
  let model;
  try { model = (await import(`${PACKAGES[group]}/${group}/${version}/${doc.kind}`))[doc.kind]; }
  catch { console.error(`no schema for ${doc.apiVersion} ${doc.kind}`); failed++; continue; }
  try { new model(doc).validate(); console.log(`valid: ${doc.kind} ${doc.metadata.name}`); }
  catch (e) { console.error(`invalid: ${doc.kind} ${doc.metadata.name}: ${e.message}`); failed++; }
}
process.exit(failed ? 1 : 0);
