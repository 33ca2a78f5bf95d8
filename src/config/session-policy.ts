import { BrokerError } from '../domain/errors';

/**
 * Session-policy templates of `aws-sts` grants. A template is a JSON policy whose string values may hold
 * tasklease placeholders, `${task.id}`, `${task.ticket}`, `${task.ref}`, `${identity.subject}`,
 * `${identity.issuer}` and `${identity.claims.<name>}`; IAM's own policy variables (`${aws:username}`) pass
 * through untouched. Values are substituted into parsed strings and must match SAFE_VALUE, so a task field
 * can neither break out of its string nor widen a pattern (`*`, `?`) nor smuggle in a variable (`$`).
 */
const OURS = /\$\{(task|identity)\.([^}]*)\}/g;
const CLAIM = /^claims\.[A-Za-z0-9_.:-]{1,128}$/;
const KNOWN: Record<string, (path: string) => boolean> = {
  task: (path) => ['id', 'ticket', 'ref'].includes(path),
  identity: (path) => path === 'subject' || path === 'issuer' || CLAIM.test(path),
};

/** Letters, digits and `_ . : / = + @ -`: what an ARN, a ref or a ticket needs, and nothing IAM treats specially. */
export const SAFE_VALUE = /^[A-Za-z0-9_.:/=+@-]{1,256}$/;

/** STS refuses a session policy whose plaintext exceeds this many characters. */
export const SESSION_POLICY_MAX_CHARS = 2048;

export type PlaceholderValues = (namespace: 'task' | 'identity', path: string) => string | undefined;

/** Every string in the template, keys included, depth first. */
function* strings(value: unknown, isKey = false): Generator<{ text: string; isKey: boolean }> {
  if (typeof value === 'string') yield { text: value, isKey };
  else if (Array.isArray(value)) for (const item of value) yield* strings(item);
  else if (value && typeof value === 'object') {
    for (const [key, child] of Object.entries(value)) {
      yield { text: key, isKey: true };
      yield* strings(child);
    }
  }
}

/** Problems with a template, for config validation; an empty list means it is usable. */
export function checkSessionPolicyTemplate(template: Record<string, unknown>): string[] {
  const problems: string[] = [];
  if (template.Version !== '2012-10-17') problems.push('Version must be "2012-10-17"');
  if (!Array.isArray(template.Statement) || template.Statement.length === 0)
    problems.push('Statement must be a non-empty list');
  for (const { text, isKey } of strings(template)) {
    for (const [whole, namespace, path] of text.matchAll(OURS)) {
      if (isKey) problems.push(`${whole} may only appear in a value, not in the key "${text}"`);
      else if (!KNOWN[namespace as string]?.(path as string))
        problems.push(
          `unknown placeholder ${whole} (use task.id, task.ticket, task.ref, identity.subject, identity.issuer or identity.claims.<name>)`,
        );
    }
  }
  const staticSize = JSON.stringify(template).replace(OURS, '').length;
  if (staticSize > SESSION_POLICY_MAX_CHARS)
    problems.push(
      `is ${staticSize} characters before any placeholder is filled; STS allows ${SESSION_POLICY_MAX_CHARS}`,
    );
  return problems;
}

/**
 * The session policy for one request, as the JSON text sent to STS. Refuses (400) a missing, empty or unsafe
 * value and a result over STS's limit; never returns a policy that differs in structure from the template.
 */
export function renderSessionPolicy(template: Record<string, unknown>, values: PlaceholderValues): string {
  const fill = (text: string) =>
    text.replace(OURS, (whole, namespace: 'task' | 'identity', path: string) => {
      const value = values(namespace, path);
      if (!value)
        throw new BrokerError(
          'placeholder_rejected',
          `the grant's session policy needs ${whole} and this request has no value for it`,
        );
      if (!SAFE_VALUE.test(value))
        throw new BrokerError(
          'placeholder_rejected',
          `${whole} holds characters a session policy cannot take safely (allowed: letters, digits and _ . : / = + @ -, at most 256)`,
        );
      return value;
    });
  const walk = (value: unknown): unknown => {
    if (typeof value === 'string') return fill(value);
    if (Array.isArray(value)) return value.map(walk);
    if (value && typeof value === 'object')
      return Object.fromEntries(Object.entries(value).map(([key, child]) => [key, walk(child)]));
    return value;
  };
  const policy = JSON.stringify(walk(template));
  if (policy.length > SESSION_POLICY_MAX_CHARS)
    throw new BrokerError(
      'session_policy_too_large',
      `the rendered session policy is ${policy.length} characters; STS allows ${SESSION_POLICY_MAX_CHARS}`,
    );
  return policy;
}
