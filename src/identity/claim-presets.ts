import type { IssuerKind } from '../domain/types';

export type Claims = Record<string, unknown>;

/** Flattens string leaves of the payload (`kubernetes.io.namespace`) for Cedar's `principal.claims`. */
export function stringClaims(
  payload: Claims,
  prefix = '',
  out: Record<string, string> = {},
): Record<string, string> {
  for (const [key, value] of Object.entries(payload)) {
    const name = prefix ? `${prefix}.${key}` : key;
    if (typeof value === 'string') out[name] = value;
    else if (value && typeof value === 'object' && !Array.isArray(value) && prefix.split('.').length < 4) {
      stringClaims(value as Claims, name, out);
    }
  }
  return out;
}

const SPIFFE_ID = /^spiffe:\/\/([a-z0-9._-]+)(\/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*)?$/;

/**
 * Kind-specific checks and derived claims. Returns a reason string when the token does not have the shape
 * its issuer kind promises (the caller logs it and refuses the token).
 */
export function applyPreset(
  kind: IssuerKind,
  claims: Record<string, string>,
  header: { typ?: string },
): string | null {
  switch (kind) {
    case 'spiffe': {
      // JWT-SVID: sub must be a SPIFFE ID; typ, when present, is JWT or JOSE.
      const match = SPIFFE_ID.exec(claims.sub ?? '');
      if (!match) return 'sub is not a SPIFFE ID';
      if (header.typ && !['JWT', 'JOSE'].includes(header.typ))
        return `JWT-SVID typ ${header.typ} is not JWT or JOSE`;
      claims.trust_domain = match[1] as string;
      claims.spiffe_path = match[2] ?? '';
      return null;
    }
    case 'kubernetes': {
      if (!claims.sub?.startsWith('system:serviceaccount:')) return 'sub is not a service account';
      claims.namespace = claims['kubernetes.io.namespace'] ?? claims.sub.split(':')[2] ?? '';
      claims.serviceaccount = claims['kubernetes.io.serviceaccount.name'] ?? claims.sub.split(':')[3] ?? '';
      claims.pod = claims['kubernetes.io.pod.name'] ?? '';
      return null;
    }
    case 'github-actions':
      return claims.repository && claims.run_id ? null : 'GitHub Actions token without repository or run_id';
    case 'gitlab':
      return claims.project_path && claims.pipeline_id
        ? null
        : 'GitLab token without project_path or pipeline_id';
    case 'oidc':
      return null;
  }
}
