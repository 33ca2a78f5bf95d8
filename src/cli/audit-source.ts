import { readFile } from 'node:fs/promises';
import type { JSONWebKeySet } from 'jose';
import type { RawAuditEntry, StoredSeal } from '../audit/audit-log';
import type { createApiClient } from './api-client';

type Call = ReturnType<typeof createApiClient>;

export interface AuditFilterOptions {
  task?: string;
  lease?: string;
  identity?: string;
  issuer?: string;
}

interface ExportPage {
  entries: { id: string; event: string }[];
  seals: { id: string; seal: string }[];
  next: string | null;
}

interface SealsPage {
  seals: { id: string; seal: string }[];
  next: string | null;
}

/** Every page of `GET /v1/audit/export` for a filter (none: the whole log), seals de-duplicated. */
export async function fetchAudit(
  call: Call,
  filter: AuditFilterOptions,
): Promise<{ entries: RawAuditEntry[]; seals: StoredSeal[] }> {
  const entries: RawAuditEntry[] = [];
  const seals = new Map<string, StoredSeal>();
  let after: string | null = null;
  do {
    const query = new URLSearchParams({ limit: '5000' });
    for (const [key, value] of Object.entries(filter)) if (value) query.set(key, value);
    if (after) query.set('after', after);
    const page: ExportPage = await call<ExportPage>('GET', `/v1/audit/export?${query}`);
    entries.push(...page.entries.map((entry) => ({ id: entry.id, json: entry.event })));
    for (const seal of page.seals) seals.set(seal.id, { id: seal.id, jws: seal.seal });
    after = page.next;
  } while (after);
  // The whole log: every seal too, a seal whose events were all deleted among them.
  if (!Object.values(filter).some(Boolean)) {
    let afterSeal: string | null = null;
    do {
      const query: string = afterSeal ? `?limit=1000&after=${afterSeal}` : '?limit=1000';
      const page: SealsPage = await call<SealsPage>('GET', `/v1/audit/seals${query}`);
      for (const seal of page.seals) seals.set(seal.id, { id: seal.id, jws: seal.seal });
      afterSeal = page.next;
    } while (afterSeal);
  }
  return { entries, seals: [...seals.values()] };
}

/**
 * The keys to verify with: a JWKS file the verifier trusts, or else the broker's published JWKS. The file
 * is the stronger check: a broker that rewrote its log could publish keys to match.
 */
export async function loadJwks(
  jwksFile: string | undefined,
  addr: string,
): Promise<{ jwks: JSONWebKeySet; source: string }> {
  if (jwksFile) {
    const jwks = JSON.parse(await readFile(jwksFile, 'utf8')) as JSONWebKeySet;
    if (!Array.isArray(jwks.keys)) throw new Error(`${jwksFile} is not a JSON Web Key Set`);
    return { jwks, source: jwksFile };
  }
  const url = new URL('/.well-known/jwks.json', addr);
  const response = await fetch(url).catch((error: Error) => {
    throw new Error(`cannot fetch ${url}: ${error.message}`);
  });
  if (!response.ok) throw new Error(`cannot fetch ${url}: HTTP ${response.status}`);
  return {
    jwks: (await response.json()) as JSONWebKeySet,
    source: `${url} (the broker's own; pin with --jwks)`,
  };
}
