/**
 * Session-policy templates of `aws-sts` grants, checked at config load. A template is a JSON policy whose
 * string values may hold tasklease placeholders, `${task.id}`, `${task.ticket}`, `${task.ref}`,
 * `${identity.subject}`, `${identity.issuer}` and `${identity.claims.<name>}`; IAM's own policy variables
 * (`${aws:username}`) pass through untouched. Filling them in: src/providers/aws-sts/session-policy.ts.
 */
export const PLACEHOLDER = /\$\{(task|identity)\.([^}]*)\}/g;
const CLAIM = /^claims\.[A-Za-z0-9_.:-]{1,128}$/;
const KNOWN: Record<string, (path: string) => boolean> = {
  task: (path) => ['id', 'ticket', 'ref'].includes(path),
  identity: (path) => path === 'subject' || path === 'issuer' || CLAIM.test(path),
};

/** STS refuses a session policy whose plaintext exceeds this many characters. */
export const SESSION_POLICY_MAX_CHARS = 2048;

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
    for (const [whole, namespace, path] of text.matchAll(PLACEHOLDER)) {
      if (isKey) problems.push(`${whole} may only appear in a value, not in the key "${text}"`);
      else if (!KNOWN[namespace as string]?.(path as string))
        problems.push(
          `unknown placeholder ${whole} (use task.id, task.ticket, task.ref, identity.subject, identity.issuer or identity.claims.<name>)`,
        );
    }
  }
  const staticSize = JSON.stringify(template).replace(PLACEHOLDER, '').length;
  if (staticSize > SESSION_POLICY_MAX_CHARS)
    problems.push(
      `is ${staticSize} characters before any placeholder is filled; STS allows ${SESSION_POLICY_MAX_CHARS}`,
    );
  return problems;
}
