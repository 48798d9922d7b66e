// Data access of the example service: the database (items) and the cache (hit counter).
'use strict';

const HAS_DATABASE = true;
const HAS_CACHE = false;

// migrate.js sets 1: its BEGIN, statements and COMMIT must share one connection.
const POOL_SIZE = Number(process.env.DB_POOL_SIZE || 5);

class Unavailable extends Error {}

const mysql = require('mysql2/promise');
let pool;
function db() {
  pool = pool || mysql.createPool({ uri: process.env.DATABASE_URL, connectionLimit: POOL_SIZE, connectTimeout: 3000 });
  return pool;
}
async function query(sql, params = []) {
  try {
    const [rows] = await db().query(sql, params);
    return rows;
  } catch (error) {
    // Errors with a SQL state come from the server and are the query's fault, except connection class 08.
    if (error.sqlState && !error.sqlState.startsWith('08')) throw error;
    throw new Unavailable(`database: ${error.message}`);
  }
}
const sql = { list: 'SELECT id, name FROM items ORDER BY id', add: 'INSERT INTO items (name) VALUES (?)' };
async function addItem(name) {
  const result = await query(sql.add, [name]);
  return { id: Number(result.insertId), name };
}

async function listItems() {
  const rows = await query(sql.list);
  return rows.map((row) => ({ id: Number(row.id), name: row.name }));
}

let cache;
async function hit() {
  try {
    if (!cache) {
      const { createClient } = require('redis');
      cache = createClient({ url: process.env.REDIS_URL, socket: { connectTimeout: 2000, reconnectStrategy: 1000 } });
      cache.on('error', () => {});
      await cache.connect();
    }
    return await cache.incr('hits');
  } catch (error) {
    return null;
  }
}

async function close() {
  if (pool) await pool.end();
  if (cache) await cache.quit().catch(() => {});
}

module.exports = { HAS_DATABASE, HAS_CACHE, Unavailable, query, listItems, addItem, hit, close };
