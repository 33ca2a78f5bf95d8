import { BrokerError } from '../../domain/errors';
import { PLACEHOLDER, SESSION_POLICY_MAX_CHARS } from '../../config/session-policy-template';

/** Letters, digits and `_ . : / = + @ -`: what an ARN, a ref or a ticket needs, and nothing IAM treats specially. */
export const SAFE_VALUE = /^[A-Za-z0-9_.:/=+@-]{1,256}$/;

export type PlaceholderValues = (namespace: 'task' | 'identity', path: string) => string | undefined;

/**
 * The session policy for one request, as the JSON text sent to STS. Values are substituted into parsed
 * strings and must match SAFE_VALUE, so a task field can neither break out of its string nor widen a
 * pattern (`*`, `?`) nor smuggle in an IAM variable (`$`). Refuses (400) a missing, empty or unsafe value
 * and a result over STS's limit. The template itself was checked at config load.
 */
export function renderSessionPolicy(template: Record<string, unknown>, values: PlaceholderValues): string {
  const fill = (text: string) =>
    text.replace(PLACEHOLDER, (whole, namespace: 'task' | 'identity', path: string) => {
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
