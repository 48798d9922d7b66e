// Golden Node: example service.
//
// The deployment's contract with any app: listen on PORT, answer /healthz with 200, read
// APP_ENV, LOG_LEVEL, DATABASE_URL and REDIS_URL from the environment, and expose Prometheus
// metrics on /metrics (http_requests_total and http_request_duration_seconds).
'use strict';

const http = require('node:http');
const client = require('prom-client');
const store = require('./src/store');

const PORT = Number(process.env.PORT || 3000);
const HEALTH_PATH = '/healthz';
const APP_ENV = process.env.APP_ENV || 'development';
const VERSION = process.env.APP_VERSION || 'dev';

const requests = new client.Counter({ name: 'http_requests_total', help: 'HTTP requests served', labelNames: ['method', 'route', 'status'] });
const latency = new client.Histogram({ name: 'http_request_duration_seconds', help: 'Time to serve a request', labelNames: ['route'] });

function readJson(req) {
  return new Promise((resolve) => {
    let body = '';
    req.on('data', (chunk) => { body += chunk; });
    req.on('end', () => {
      try { resolve(JSON.parse(body || '{}')); } catch { resolve(null); }
    });
  });
}

async function handle(req, path) {
  if (path === HEALTH_PATH) return ['health', 200, { status: 'ok' }];
  if (path === '/metrics') return ['metrics', 200, await client.register.metrics(), client.register.contentType];
  if (path === '/') {
    const body = { service: 'golden-node', version: VERSION, environment: APP_ENV };
    if (store.HAS_CACHE) body.hits = await store.hit();
    return ['root', 200, body];
  }
  if (path === '/items' && store.HAS_DATABASE) {
    if (req.method === 'GET') return ['items', 200, { items: await store.listItems() }];
    if (req.method === 'POST') {
      const payload = await readJson(req);
      const name = payload && typeof payload.name === 'string' ? payload.name.trim() : '';
      if (!name) return ['items', 400, { error: 'send JSON {"name": "..."}' }];
      return ['items', 201, await store.addItem(name)];
    }
    return ['items', 405, { error: 'use GET or POST' }];
  }
  // Deliberate failure, for checking error alerts end to end.
  if (path === '/error') return ['error', 500, { error: 'deliberate error' }];
  return ['other', 404, { error: 'not found' }];
}

const server = http.createServer(async (req, res) => {
  const stop = latency.startTimer();
  const path = new URL(req.url, 'http://localhost').pathname;
  let route; let status; let body; let type;
  try {
    [route, status, body, type] = await handle(req, path);
  } catch (error) {
    const unavailable = error instanceof store.Unavailable;
    // The details go to the log, never to the client (a driver's error names hosts and users).
    console.error(unavailable ? 'dependency unavailable:' : 'request failed:', error.message);
    [route, status, body] = unavailable
      ? ['unavailable', 503, { error: 'a dependency is unavailable, retry later' }]
      : ['failed', 500, { error: 'internal error' }];
  }
  const payload = typeof body === 'string' ? body : JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': type || 'application/json', 'Content-Length': Buffer.byteLength(payload) });
  res.end(payload);
  requests.inc({ method: req.method, route, status });
  stop({ route });
});

server.keepAliveTimeout = 65000;
server.listen(PORT, () => console.log(`listening on ${PORT} (${APP_ENV}, version ${VERSION})`));

// On SIGTERM: stop accepting, let requests in flight finish, then exit.
process.on('SIGTERM', () => {
  console.log('SIGTERM: draining');
  server.close(async () => {
    await store.close();
    process.exit(0);
  });
  setTimeout(() => process.exit(0), 20000).unref();
});
