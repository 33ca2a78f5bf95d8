import { createHash } from 'node:crypto';
import { ConfigError, parseConfig } from '../../src/config/load-config';
import type { BreakGlassConfig } from '../../src/config/schema';
import { BrokerError } from '../../src/domain/errors';
import { createBreakGlassVerifier, generateBreakGlassToken } from '../../src/identity/break-glass';
import { adminPermissions } from '../../src/policy/admin-roles';

const sha256Hex = (value: string) => createHash('sha256').update(value).digest('hex');

const minimalConfig = (extra: Record<string, unknown>) => ({
  issuers: [
    {
      name: 'corp',
      kind: 'oidc',
      issuer: 'https://idp.example.com',
      jwksFile: './corp.jwks.json',
      audiences: ['tasklease'],
    },
  ],
  grants: {},
  policies: './policies',
  ...extra,
});

/** The ConfigError message for `input`; fails the test when the config is accepted. */
const configErrorOf = (input: unknown): string => {
  try {
    parseConfig(input, '/etc/tasklease');
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return (error as Error).message;
  }
  throw new Error('parseConfig accepted an invalid configuration');
};

describe('break-glass tokens: generation', () => {
  it('makes a recognisable 256-bit token whose SHA-256 is the hash printed for the config', () => {
    const first = generateBreakGlassToken();
    expect(first.token).toMatch(/^tlbg_[A-Za-z0-9_-]{43}$/);
    expect(Buffer.from(first.token.slice(5), 'base64url')).toHaveLength(32);
    expect(first.tokenSha256).toBe(sha256Hex(first.token));
    expect(generateBreakGlassToken().token).not.toBe(first.token);
  });
});

describe('break-glass tokens: configuration', () => {
  const { token, tokenSha256 } = generateBreakGlassToken();

  it('accepts a hash, defaults the roles to admin, and keeps an expiry', () => {
    const config = parseConfig(
      minimalConfig({
        breakGlass: [
          { name: 'emergency', tokenSha256 },
          {
            name: 'viewer-card',
            tokenSha256: sha256Hex('other'),
            roles: ['viewer'],
            expiresAt: '2027-01-01T00:00:00.000Z',
          },
        ],
      }),
      '/',
    );
    expect(config.breakGlass).toEqual([
      { name: 'emergency', tokenSha256, roles: ['admin'] },
      {
        name: 'viewer-card',
        tokenSha256: sha256Hex('other'),
        roles: ['viewer'],
        expiresAt: '2027-01-01T00:00:00.000Z',
      },
    ]);
    expect(parseConfig(minimalConfig({}), '/').breakGlass).toEqual([]);
  });

  // [case, breakGlass entries or a config change, what the message must say]
  const cases: [string, Record<string, unknown>, RegExp][] = [
    [
      'the token itself as the hash',
      { breakGlass: [{ name: 'x', tokenSha256: token }] },
      /breakGlass\.0\.tokenSha256: this is the token itself/,
    ],
    ['a plaintext token member', { breakGlass: [{ name: 'x', token }] }, /breakGlass\.0: .*"token"/],
    [
      'a hash that is not hex',
      { breakGlass: [{ name: 'x', tokenSha256: 'z'.repeat(64) }] },
      /breakGlass\.0\.tokenSha256: the SHA-256 of the token as 64/,
    ],
    [
      'a short hash',
      { breakGlass: [{ name: 'x', tokenSha256: tokenSha256.slice(1) }] },
      /breakGlass\.0\.tokenSha256/,
    ],
    [
      'an upper-case hash',
      { breakGlass: [{ name: 'x', tokenSha256: tokenSha256.toUpperCase() }] },
      /breakGlass\.0\.tokenSha256/,
    ],
    [
      'an unknown role',
      { breakGlass: [{ name: 'x', tokenSha256, roles: ['root'] }] },
      /breakGlass\.0\.roles\.0/,
    ],
    ['no roles', { breakGlass: [{ name: 'x', tokenSha256, roles: [] }] }, /breakGlass\.0\.roles/],
    [
      'an expiry that is not a date',
      { breakGlass: [{ name: 'x', tokenSha256, expiresAt: 'next week' }] },
      /breakGlass\.0\.expiresAt/,
    ],
    ['a name with capitals', { breakGlass: [{ name: 'Emergency', tokenSha256 }] }, /breakGlass\.0\.name/],
    [
      'two entries with one name',
      {
        breakGlass: [
          { name: 'x', tokenSha256 },
          { name: 'x', tokenSha256: sha256Hex('other') },
        ],
      },
      /breakGlass\.1\.name: duplicate name/,
    ],
    [
      'two entries with one token',
      {
        breakGlass: [
          { name: 'x', tokenSha256 },
          { name: 'y', tokenSha256 },
        ],
      },
      /breakGlass\.1\.tokenSha256: the same token as another entry/,
    ],
    [
      'a token pasted elsewhere in the file',
      { admins: [{ issuer: 'corp', subjects: [token] }] },
      /admins\.0\.subjects\.0: a break-glass token in the config/,
    ],
  ];

  it.each(cases)('refuses %s, naming the field and never echoing the token', (_label, extra, message) => {
    const text = configErrorOf(minimalConfig(extra));
    expect(text).toMatch(message);
    expect(text).not.toContain(token);
  });

  it('refuses an issuer named break-glass: that name belongs to break-glass callers', () => {
    const input = minimalConfig({});
    input.issuers[0]!.name = 'break-glass';
    expect(configErrorOf(input)).toMatch(/issuers\.0\.name: "break-glass" is reserved/);
  });
});

describe('break-glass tokens: verification', () => {
  const viewer = generateBreakGlassToken();
  const admin = generateBreakGlassToken();
  const expired = generateBreakGlassToken();
  const nowMs = Date.parse('2026-06-01T00:00:00Z');
  const entries: BreakGlassConfig[] = [
    {
      name: 'viewer-card',
      tokenSha256: viewer.tokenSha256,
      roles: ['viewer'],
      expiresAt: '2026-07-01T00:00:00Z',
    },
    { name: 'emergency', tokenSha256: admin.tokenSha256, roles: ['admin'] },
    {
      name: 'old-card',
      tokenSha256: expired.tokenSha256,
      roles: ['admin'],
      expiresAt: '2026-06-01T00:00:00Z',
    },
  ];

  const verifyWith = (list: BreakGlassConfig[], token: string) => {
    const rejections: [string, string | undefined][] = [];
    const verify = createBreakGlassVerifier(list, {
      nowMs: () => nowMs,
      onReject: (reason, name) => rejections.push([reason, name]),
    });
    try {
      return { caller: verify(token), rejections };
    } catch (error) {
      expect(error).toBeInstanceOf(BrokerError);
      expect(error).toMatchObject({ code: 'unauthenticated', message: 'identity token rejected' });
      return { caller: null, rejections };
    }
  };

  it('yields a break-glass caller named after the entry, holding its roles', () => {
    const { caller, rejections } = verifyWith(entries, admin.token);
    expect(caller).toEqual({
      issuer: 'break-glass',
      subject: 'emergency',
      breakGlass: true,
      roles: ['admin'],
    });
    expect(rejections).toEqual([]);
    const asViewer = verifyWith(entries, viewer.token).caller!;
    expect([...adminPermissions({ admins: [] }, asViewer)]).toEqual(['view']);
    expect([...adminPermissions({ admins: [] }, caller!)].sort()).toEqual(['approve', 'revoke', 'view']);
  });

  // Every refusal is the same generic 401; only the log reason differs.
  const refusals: [string, BreakGlassConfig[], () => string, [string, string | undefined]][] = [
    [
      'a token no entry holds',
      entries,
      () => generateBreakGlassToken().token,
      ['unknown break-glass token', undefined],
    ],
    ['an entry past its expiresAt', entries, () => expired.token, ['expired break-glass token', 'old-card']],
    [
      'a token one character off',
      entries,
      () => `${admin.token.slice(0, -1)}${admin.token.endsWith('A') ? 'B' : 'A'}`,
      ['unknown break-glass token', undefined],
    ],
    ['a malformed token', entries, () => 'tlbg_short', ['malformed break-glass token', undefined]],
    [
      'the hash presented as the token',
      entries,
      () => admin.tokenSha256,
      ['malformed break-glass token', undefined],
    ],
    [
      'any token when none is configured',
      [],
      () => admin.token,
      ['no break-glass tokens are configured', undefined],
    ],
  ];

  it.each(refusals)('refuses %s with 401 unauthenticated', (_label, list, token, reason) => {
    const { caller, rejections } = verifyWith(list, token());
    expect(caller).toBeNull();
    expect(rejections).toEqual([reason]);
  });
});
