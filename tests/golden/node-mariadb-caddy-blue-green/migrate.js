// Applies migrations/*.sql in name order, once each, recording them in schema_migrations.
// Run as a one-off container before the app starts (the `migrate` service; scripts/migrate.sh).
// Exits non-zero on the first failing migration; the ones before it stay applied.
'use strict';

const fs = require('node:fs');
const path = require('node:path');

process.env.DB_POOL_SIZE = '1';
const store = require('./src/store');

const dir = path.join(__dirname, 'migrations');
const log = (message) => console.log(`${new Date().toISOString()} migrate: ${message}`);

async function main() {
  await store.query(
    'CREATE TABLE IF NOT EXISTS schema_migrations (version VARCHAR(255) PRIMARY KEY, applied_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP)',
  );
  const applied = new Set((await store.query('SELECT version FROM schema_migrations')).map((row) => row.version));
  const pending = fs.readdirSync(dir).filter((f) => f.endsWith('.sql')).sort()
    .filter((file) => !applied.has(path.basename(file, '.sql')));
  for (const file of pending) {
    log(`applying ${file}`);
    const statements = fs.readFileSync(path.join(dir, file), 'utf8').split(';').map((s) => s.trim()).filter(Boolean);
    await store.query('BEGIN');
    try {
      for (const statement of statements) await store.query(statement);
      await store.query('INSERT INTO schema_migrations (version) VALUES (?)', [path.basename(file, '.sql')]);
      await store.query('COMMIT');
    } catch (error) {
      await store.query('ROLLBACK');
      throw new Error(`${file} failed: ${error.message}`);
    }
  }
  log(`schema is current (${pending.length} applied now, ${applied.size} before)`);
}

main()
  .then(() => store.close())
  .catch(async (error) => {
    console.error(`${new Date().toISOString()} migrate: ${error.message}`);
    await store.close();
    process.exit(1);
  });
