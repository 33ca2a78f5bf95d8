import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import * as cedar from '@cedar-policy/cedar-wasm/nodejs';
import type { PolicyJson } from '@cedar-policy/cedar-wasm/nodejs';
import { attributesRead, prune, type ReadTree } from './claims-used';
import type { PolicyRequest } from './vocabulary';

export interface PolicyDecision {
  allowed: boolean;
  /** Ids of the policies that decided (the permits that allowed, or the forbids that denied). */
  policyIds: string[];
  /** A sentence for the log and the audit: why. */
  reason: string;
}

export interface PolicyEngine {
  evaluate(request: PolicyRequest): PolicyDecision;
  /** Re-reads the policy files; on error the policies in force stay in force and the error is thrown. */
  reload(): { policyCount: number };
  readonly policyCount: number;
  /** Whether any policy in force could read this `context` attribute (claims-used.ts). */
  readsContext(attribute: string): boolean;
  /** Every `Workload` id the policies in force name literally (scope or condition), with its policy. */
  readonly workloadIds: readonly { policyId: string; id: string }[];
}

/**
 * Policies naming a workload without its issuer (`Workload::"release-agent"`): principals are
 * `Workload::"<issuer name>/<subject>"`, so such a policy matches nobody (and once matched that subject from
 * any issuer). An id counts as carrying its issuer when what comes before its first `/` is a configured
 * issuer's name (issuer names hold no `/`; subjects may, as GitHub's `repo:org/repo:…` do).
 */
export function workloadIdWarnings(
  workloadIds: readonly { policyId: string; id: string }[],
  issuerNames: readonly string[],
): string[] {
  return workloadIds
    .filter(({ id }) => !issuerNames.includes(id.slice(0, Math.max(0, id.indexOf('/')))))
    .map(
      ({ policyId, id }) =>
        `policy ${policyId} names Workload::"${id}" without a configured issuer: principals are ` +
        `Workload::"<issuer name>/<subject>" (docs/policies.md), so it matches no workload`,
    );
}

/** The `Workload` entities a policy's JSON names, wherever they appear. */
function workloadIdsIn(policies: readonly { id: string; json: unknown }[]) {
  const found: { policyId: string; id: string }[] = [];
  const walk = (policyId: string, node: unknown): void => {
    if (Array.isArray(node)) return node.forEach((item) => walk(policyId, item));
    if (!node || typeof node !== 'object') return;
    const record = node as Record<string, unknown>;
    if (record.type === 'Workload' && typeof record.id === 'string') found.push({ policyId, id: record.id });
    for (const value of Object.values(record)) walk(policyId, value);
  };
  for (const { id, json } of policies) walk(id, json);
  return found;
}

export class PolicyLoadError extends Error {
  override name = 'PolicyLoadError';
}

const ID_ANNOTATION = /@id\(\s*"([^"]+)"\s*\)/;

/** Every `.cedar` file under `location` (a file or a folder), each policy named by `@id` or file:index. */
export function readPolicies(location: string): Record<string, string> {
  const files = statSync(location).isDirectory()
    ? readdirSync(location)
        .filter((file) => file.endsWith('.cedar'))
        .sort()
        .map((file) => path.join(location, file))
    : [location];
  const policies: Record<string, string> = {};
  for (const file of files) {
    const parts = cedar.policySetTextToParts(readFileSync(file, 'utf8'));
    if (parts.type === 'failure') {
      throw new PolicyLoadError(`${file}: ${parts.errors.map((error) => error.message).join('; ')}`);
    }
    if (parts.policy_templates.length > 0) throw new PolicyLoadError(`${file}: templates are not supported`);
    parts.policies.forEach((text, index) => {
      const id = ID_ANNOTATION.exec(text)?.[1] ?? `${path.basename(file)}:${index}`;
      if (policies[id]) throw new PolicyLoadError(`${file}: two policies with id "${id}"`);
      policies[id] = text;
    });
  }
  return policies;
}

let generation = 0;

/**
 * Cedar, pre-parsed: the policy set is parsed once per load into the WASM module's cache under a fresh id,
 * then the id in use is swapped. Requests in flight finish on the set they started with; none is dropped.
 * Default deny: with no permit matching, Cedar denies.
 */
export function createPolicyEngine(location: string): PolicyEngine {
  return createPolicyEngineFrom(() => readPolicies(location));
}

/** The same, over policies `read` gives (by id), read again on every reload. */
export function createPolicyEngineFrom(read: () => Record<string, string>): PolicyEngine {
  let setId = '';
  let policyCount = 0;
  let forbids = new Set<string>();
  let contextRead: ReadTree | null = null;
  let principalRead: ReadTree | null = null;
  let resourceRead: ReadTree | null = null;
  let workloadIds: { policyId: string; id: string }[] = [];

  const load = () => {
    const policies = read();
    const nextForbids = new Set<string>();
    const policyJson: PolicyJson[] = [];
    const named: { id: string; json: unknown }[] = [];
    for (const [id, text] of Object.entries(policies)) {
      const json = cedar.policyToJson(text);
      if (json.type === 'failure')
        throw new PolicyLoadError(`${id}: ${json.errors.map((error) => error.message).join('; ')}`);
      if (json.json.effect === 'forbid') nextForbids.add(id);
      policyJson.push(json.json);
      named.push({ id, json: json.json });
    }
    const nextId = `tasklease-${++generation}`;
    const parsed = cedar.preparsePolicySet(nextId, { staticPolicies: policies });
    if (parsed.type === 'failure')
      throw new PolicyLoadError(parsed.errors.map((error) => error.message).join('; '));
    setId = nextId;
    forbids = nextForbids;
    contextRead = attributesRead(policyJson, 'context');
    principalRead = attributesRead(policyJson, 'principal');
    resourceRead = attributesRead(policyJson, 'resource');
    policyCount = Object.keys(policies).length;
    workloadIds = workloadIdsIn(named);
    return { policyCount };
  };
  load();

  return {
    get policyCount() {
      return policyCount;
    },
    get workloadIds() {
      return workloadIds;
    },
    reload: load,
    readsContext: (attribute) => contextRead === null || contextRead.has(attribute),
    evaluate(request) {
      // Cedar's cost grows with every attribute it is given: it gets only what some policy could read, down to
      // the claim and the task field (`principal.claims.repository`, `context.task.ticket`).
      // An entity left with no attribute, parent or tag is dropped: nothing could read it, and `==`/`in` on
      // its uid need no entity.
      const entities = request.entities.flatMap((entity) => {
        const { type, id } = entity.uid as { type?: string; id?: string };
        const isPrincipal = type === request.principal.type && id === request.principal.id;
        const isResource = type === request.resource.type && id === request.resource.id;
        if (!isPrincipal && !isResource) return [entity];
        const attrs = prune(entity.attrs, isPrincipal ? principalRead : resourceRead);
        const bare =
          Object.keys(attrs).length === 0 &&
          (entity.parents ?? []).length === 0 &&
          Object.keys(entity.tags ?? {}).length === 0;
        return bare ? [] : [{ ...entity, attrs }];
      });
      const context = prune(request.context, contextRead);
      const answer = cedar.statefulIsAuthorized({
        ...request,
        context,
        entities,
        preparsedPolicySetId: setId,
      });
      // Fails closed: an evaluation failure is a denial, with the error as the reason.
      if (answer.type === 'failure') {
        return {
          allowed: false,
          policyIds: [],
          reason: `policy evaluation failed: ${answer.errors.map((e) => e.message).join('; ')}`,
        };
      }
      const { decision, diagnostics } = answer.response;
      const policyIds = diagnostics.reason;
      const errors = diagnostics.errors.map((e) => `${e.policyId}: ${e.error.message}`);
      // Fails closed: Cedar skips a policy whose condition errors, so a forbid that errored (say, on a claim
      // the token lacks) would let a broad permit through. Here it denies instead.
      const brokenForbids = diagnostics.errors.filter((e) => forbids.has(e.policyId));
      if (brokenForbids.length > 0) {
        const ids = brokenForbids.map((e) => e.policyId);
        return {
          allowed: false,
          policyIds: ids,
          reason: `forbid policy ${ids.join(', ')} could not be evaluated (${errors.join('; ')}): denied`,
        };
      }
      if (decision === 'allow')
        return { allowed: true, policyIds, reason: `permitted by ${policyIds.join(', ')}` };
      const reason =
        policyIds.length > 0
          ? `forbidden by ${policyIds.join(', ')}`
          : `no permit policy matched${errors.length ? ` (errors: ${errors.join('; ')})` : ''}`;
      return { allowed: false, policyIds, reason };
    },
  };
}
