import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { readEnv } from '../../src/config/env';
import { ConfigError, loadConfigFile, parseConfig } from '../../src/config/load-config';
import type { JwtGrantConfig } from '../../src/config/schema';
import { tempDir } from '../support/fixtures';

/** An aws-sts grant whose one statement is extended by `extra`. */
const awsGrant = (extra: Record<string, unknown>) => ({
  provider: 'aws-sts',
  roleArn: 'arn:aws:iam::123456789012:role/reports',
  maxTtlSeconds: 3600,
  sessionPolicy: {
    Version: '2012-10-17',
    Statement: [{ Effect: 'Allow', Action: 's3:GetObject', Resource: '*', ...extra }],
  },
});

/** A config an operator could ship: every section present, two issuers (remote and file JWKS). */
const validInput = () => ({
  issuers: [
    {
      name: 'github-actions',
      kind: 'github-actions',
      issuer: 'https://token.actions.githubusercontent.com',
      jwksUri: 'https://token.actions.githubusercontent.com/.well-known/jwks',
      audiences: ['tasklease'],
    },
    {
      name: 'corp',
      kind: 'oidc',
      issuer: 'https://idp.example.com',
      jwksFile: './keys/corp.jwks.json',
      audiences: ['tasklease'],
    },
  ],
  grants: {
    'artifacts-api': {
      provider: 'jwt',
      audience: 'https://artifacts.internal',
      scopes: ['artifacts:read'],
      maxTtlSeconds: 600,
    },
  },
  policies: './policies',
  admins: [{ issuer: 'corp', subjects: ['alice@example.com'], roles: ['revoker', 'approver'] }],
  resourceServers: [{ issuer: 'corp', subjects: ['artifacts-api'] }],
});

/** Loosely typed on purpose: the cases break the shape. */
type Input = Record<string, any>;

/** The ConfigError message `parseConfig` throws for `input` (fails the test if it does not throw one). */
const configErrorOf = (input: unknown): string => {
  try {
    parseConfig(input, '/etc/tasklease');
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return (error as Error).message;
  }
  throw new Error('parseConfig accepted an invalid configuration');
};

describe('parseConfig accepts a valid configuration', () => {
  const config = parseConfig(validInput(), '/etc/tasklease');

  it('fills in the documented defaults', () => {
    const [github] = config.issuers;
    expect(github).toMatchObject({
      subjectClaim: 'sub',
      maxTokenLifetimeSeconds: 3600,
      clockSkewSeconds: 30,
      jwksRefreshSeconds: 300,
    });
    expect(github?.algorithms).not.toContain('HS256');
    expect(config.grants['artifacts-api']).toMatchObject({ sensitivity: 'low', approval: 'none' });
    expect(config.broker).toMatchObject({
      issuer: 'tasklease',
      defaultTaskTtlSeconds: 3600,
    });
    expect(config.revocation.attempts).toBe(8);
  });

  it('resolves relative paths against the config file directory', () => {
    expect(config.policies).toBe(path.resolve('/etc/tasklease/policies'));
    expect(config.issuers[1]?.jwksFile).toBe(path.resolve('/etc/tasklease/keys/corp.jwks.json'));
    expect(config.issuers[0]?.jwksFile).toBeUndefined();
  });

  it('keeps admin roles as given, and defaults them to admin', () => {
    expect(config.admins[0]?.roles).toEqual(['revoker', 'approver']);
    const input = validInput() as Input;
    delete input.admins[0].roles;
    expect(parseConfig(input, '/').admins[0]?.roles).toEqual(['admin']);
  });

  it('is deep-frozen: no part of it can be changed after start-up', () => {
    const nested = [
      config,
      config.issuers,
      config.issuers[0],
      config.issuers[0]?.audiences,
      config.issuers[0]?.algorithms,
      config.grants,
      config.grants['artifacts-api'],
      (config.grants['artifacts-api'] as JwtGrantConfig | undefined)?.scopes,
      config.admins[0],
      config.admins[0]?.roles,
      config.broker,
      config.revocation,
      config.resourceServers[0]?.subjects,
    ];
    for (const value of nested) expect(Object.isFrozen(value)).toBe(true);
    const mutable = config as any;
    expect(() => {
      mutable.broker.issuer = 'evil';
    }).toThrow(TypeError);
    expect(() => mutable.admins[0].subjects.push('mallory@example.com')).toThrow(TypeError);
    expect(() => {
      mutable.grants['artifacts-api'].maxTtlSeconds = 86400;
    }).toThrow(TypeError);
    expect(config.broker.issuer).toBe('tasklease');
    expect(config.admins[0]?.subjects).toEqual(['alice@example.com']);
  });

  it('does not freeze or change the caller input', () => {
    const input = validInput();
    parseConfig(input, '/etc/tasklease');
    expect(Object.isFrozen(input)).toBe(false);
    expect(input.policies).toBe('./policies');
  });
});

describe('parseConfig refuses an invalid configuration, naming the field', () => {
  // [case, how to break a valid input, what the message must say]
  const cases: [string, (input: Input) => unknown, RegExp][] = [
    [
      'both jwksUri and jwksFile',
      (c) => {
        c.issuers[0].jwksFile = './x.json';
      },
      /issuers\.0\.jwksUri: give exactly one of jwksUri or jwksFile/,
    ],
    [
      'neither jwksUri nor jwksFile',
      (c) => {
        delete c.issuers[1].jwksFile;
      },
      /issuers\.1\.jwksUri: give exactly one/,
    ],
    [
      'a jwksUri that is not http(s)',
      (c) => {
        c.issuers[0].jwksUri = 'file:///etc/passwd';
      },
      /issuers\.0\.jwksUri/,
    ],
    [
      'an issuer with no audience',
      (c) => {
        c.issuers[0].audiences = [];
      },
      /issuers\.0\.audiences/,
    ],
    [
      'an unknown issuer kind',
      (c) => {
        c.issuers[0].kind = 'azure';
      },
      /issuers\.0\.kind/,
    ],
    [
      'an issuer name with capitals',
      (c) => {
        c.issuers[0].name = 'GitHub';
      },
      /issuers\.0\.name: use lower-case/,
    ],
    [
      'a duplicate issuer name',
      (c) => {
        c.issuers[1].name = 'github-actions';
      },
      /issuers\.1\.name: duplicate issuer name "github-actions"/,
    ],
    [
      'no issuer at all',
      (c) => {
        c.issuers = [];
      },
      /issuers:/,
    ],
    [
      'an HMAC algorithm in algorithms',
      (c) => {
        c.issuers[0].algorithms = ['ES256', 'HS256'];
      },
      /issuers\.0\.algorithms\.1/,
    ],
    [
      'alg none in algorithms',
      (c) => {
        c.issuers[0].algorithms = ['none'];
      },
      /issuers\.0\.algorithms\.0/,
    ],
    [
      'a clock skew over 5 minutes',
      (c) => {
        c.issuers[0].clockSkewSeconds = 301;
      },
      /issuers\.0\.clockSkewSeconds/,
    ],
    [
      'a token lifetime over a week',
      (c) => {
        c.issuers[0].maxTokenLifetimeSeconds = 7 * 86400 + 1;
      },
      /issuers\.0\.maxTokenLifetimeSeconds/,
    ],
    [
      'a misspelt issuer key',
      (c) => {
        c.issuers[0].jwks_uri = 'https://x';
      },
      /issuers\.0: .*jwks_uri/,
    ],
    [
      'a zero maxTtlSeconds',
      (c) => {
        c.grants['artifacts-api'].maxTtlSeconds = 0;
      },
      /grants\.artifacts-api\.maxTtlSeconds/,
    ],
    [
      'a maxTtlSeconds over 12 h',
      (c) => {
        c.grants['artifacts-api'].maxTtlSeconds = 12 * 3600 + 1;
      },
      /grants\.artifacts-api\.maxTtlSeconds/,
    ],
    [
      'a fractional maxTtlSeconds',
      (c) => {
        c.grants['artifacts-api'].maxTtlSeconds = 1.5;
      },
      /grants\.artifacts-api\.maxTtlSeconds/,
    ],
    [
      'a grant without maxTtlSeconds',
      (c) => {
        delete c.grants['artifacts-api'].maxTtlSeconds;
      },
      /grants\.artifacts-api\.maxTtlSeconds/,
    ],
    [
      'a jwt grant without audience',
      (c) => {
        delete c.grants['artifacts-api'].audience;
      },
      /grants\.artifacts-api\.audience/,
    ],
    [
      'a scope with a space',
      (c) => {
        c.grants['artifacts-api'].scopes = ['read write'];
      },
      /grants\.artifacts-api\.scopes\.0: RFC 6749 scope token/,
    ],
    [
      'an unknown provider',
      (c) => {
        c.grants['artifacts-api'].provider = 'gcp';
      },
      /grants\.artifacts-api\.provider/,
    ],
    [
      'an aws-sts grant shorter than STS allows',
      (c) => {
        c.grants.reports = {
          provider: 'aws-sts',
          roleArn: 'arn:aws:iam::123456789012:role/r',
          maxTtlSeconds: 300,
        };
      },
      /grants\.reports\.maxTtlSeconds: Too small: expected number to be >=900/,
    ],
    [
      'an aws-sts grant longer than STS allows',
      (c) => {
        c.grants.reports = {
          provider: 'aws-sts',
          roleArn: 'arn:aws:iam::123456789012:role/r',
          maxTtlSeconds: 43201,
        };
      },
      /grants\.reports\.maxTtlSeconds: Too big/,
    ],
    [
      'an aws-sts grant whose roleArn is not a role',
      (c) => {
        c.grants.reports = {
          provider: 'aws-sts',
          roleArn: 'arn:aws:iam::123456789012:user/u',
          maxTtlSeconds: 900,
        };
      },
      /grants\.reports\.roleArn: an IAM role ARN/,
    ],
    [
      'a session policy with an unknown placeholder',
      (c) => {
        c.grants.reports = awsGrant({ Resource: 'arn:aws:s3:::b/${task.purpose}/*' });
      },
      /grants\.reports\.sessionPolicy: unknown placeholder \$\{task\.purpose\}/,
    ],
    [
      'a session policy with a placeholder in a key',
      (c) => {
        c.grants.reports = awsGrant({ Condition: { StringEquals: { '${identity.subject}': 'x' } } });
      },
      /grants\.reports\.sessionPolicy: \$\{identity\.subject\} may only appear in a value/,
    ],
    [
      'a session policy over 2,048 characters before placeholders',
      (c) => {
        c.grants.reports = awsGrant({
          Resource: Array.from({ length: 60 }, (_, i) => `arn:aws:s3:::bucket-${i}/reports/*`),
        });
      },
      /grants\.reports\.sessionPolicy: is \d+ characters before any placeholder is filled; STS allows 2048/,
    ],
    [
      'a vault token grant without policies (it would inherit the broker’s own)',
      (c) => {
        c.grants.deploy = { provider: 'vault', mode: 'token', policies: [], maxTtlSeconds: 900 };
      },
      /grants\.deploy\.policies: list the policies the token gets/,
    ],
    [
      'a vault token grant with the root policy',
      (c) => {
        c.grants.deploy = {
          provider: 'vault',
          mode: 'token',
          policies: ['deploy', 'root'],
          maxTtlSeconds: 900,
        };
      },
      /grants\.deploy\.policies: the root policy can never be granted/,
    ],
    [
      'an alert webhook in plain http beyond loopback, disguised with a user name',
      (c) => {
        c.alerts = { irrevocableWebhook: 'http://localhost:x@attacker.example/hook' };
      },
      /alerts\.irrevocableWebhook: https:\/\/ \(http:\/\/ only to loopback\), without user or password/,
    ],
    [
      'an approvals webhook in plain http beyond loopback',
      (c) => {
        c.approvals = { webhook: 'http://hooks.example.com/approvals' };
      },
      /approvals\.webhook: https:\/\/ \(http:\/\/ only to loopback\), without user or password/,
    ],
    [
      'an approvals webhook with a password in it',
      (c) => {
        c.approvals = { webhook: 'https://bot:secret@hooks.example.com/approvals' };
      },
      /approvals\.webhook: https:\/\/ \(http:\/\/ only to loopback\), without user or password/,
    ],
    [
      'a vault grant without a mode',
      (c) => {
        c.grants.deploy = { provider: 'vault', policies: ['deploy'], maxTtlSeconds: 900 };
      },
      /grants\.deploy\.mode: /,
    ],
    [
      'a vault dynamic grant reading under sys/',
      (c) => {
        c.grants.db = { provider: 'vault', mode: 'dynamic', path: 'sys/leases/lookup', maxTtlSeconds: 900 };
      },
      /grants\.db\.path: a secrets engine path, not one under sys\//,
    ],
    [
      'a vault dynamic grant with a .. segment',
      (c) => {
        c.grants.db = { provider: 'vault', mode: 'dynamic', path: 'database/../sys/x', maxTtlSeconds: 900 };
      },
      /grants\.db\.path: no \. or \.\. segments/,
    ],
    [
      'a vault dynamic grant with token-mode fields',
      (c) => {
        c.grants.db = {
          provider: 'vault',
          mode: 'dynamic',
          path: 'database/creds/readonly',
          policies: ['x'],
          maxTtlSeconds: 900,
        };
      },
      /grants\.db: Unrecognized key: "policies"/,
    ],
    [
      'a vault auth method with its secret inline',
      (c) => {
        c.vault = { auth: { method: 'approle', roleId: 'r', secretId: 's', secretIdFile: '/f' } };
      },
      /vault\.auth: Unrecognized key: "secretId"/,
    ],
    [
      'a stage separation naming no grant',
      (c) => {
        c.grants['artifacts-api'].approval = 'required';
        c.grants['artifacts-api'].approverMustNotHold = ['report-generate'];
      },
      /grants\.artifacts-api\.approverMustNotHold\.0: no grant named "report-generate"/,
    ],
    [
      'an approval window under a minute',
      (c) => {
        c.approvals = { pendingTtlSeconds: 5 };
      },
      /approvals\.pendingTtlSeconds/,
    ],
    [
      'a grant name with capitals',
      (c) => {
        c.grants.Reports = c.grants['artifacts-api'];
      },
      /grants\.Reports: /,
    ],
    [
      'an admin entry naming an unknown issuer',
      (c) => {
        c.admins[0].issuer = 'okta';
      },
      /admins\.0\.issuer: no issuer named "okta"/,
    ],
    [
      'a resource server naming an unknown issuer',
      (c) => {
        c.resourceServers[0].issuer = 'okta';
      },
      /resourceServers\.0\.issuer: no issuer named "okta"/,
    ],
    [
      'an unknown admin role',
      (c) => {
        c.admins[0].roles = ['root'];
      },
      /admins\.0\.roles\.0/,
    ],
    [
      'an admin entry without subjects',
      (c) => {
        c.admins[0].subjects = [];
      },
      /admins\.0\.subjects/,
    ],
    [
      'an unknown top-level key',
      (c) => {
        c.issuer = [];
      },
      /\(root\): .*"issuer"/,
    ],
    [
      'no policies',
      (c) => {
        delete c.policies;
      },
      /policies:/,
    ],
    [
      'a default task TTL over the maximum',
      (c) => {
        c.broker = { defaultTaskTtlSeconds: 7200, maxTaskTtlSeconds: 3600 };
      },
      /broker\.defaultTaskTtlSeconds: exceeds maxTaskTtlSeconds/,
    ],
    [
      'a Redis prefix with spaces',
      (c) => {
        c.broker = { redisPrefix: 'my prefix' };
      },
      /broker\.redisPrefix/,
    ],
    [
      'an unknown revocation key',
      (c) => {
        c.revocation = { retries: 3 };
      },
      /revocation: .*"retries"/,
    ],
    ['a document that is not an object', () => 'issuers: []', /\(root\)/],
    ['an empty document', () => null, /\(root\)/],
  ];

  it.each(cases)('%s', (_name, breakIt, expected) => {
    const input = validInput() as Input;
    const replaced = breakIt(input);
    const message = configErrorOf(replaced === undefined ? input : replaced);
    expect(message).toMatch(/^invalid configuration:\n/);
    expect(message).toMatch(expected);
  });

  it('lists every shape problem at once, one line per field', () => {
    const input = validInput() as Input;
    input.grants['artifacts-api'].maxTtlSeconds = 0;
    input.issuers[0].clockSkewSeconds = -1;
    input.admins[0].issuer = 'okta';
    const lines = configErrorOf(input).split('\n').slice(1);
    expect(lines).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^grants\.artifacts-api\.maxTtlSeconds: /),
        expect.stringMatching(/^issuers\.0\.clockSkewSeconds: /),
      ]),
    );
    input.issuers[0].clockSkewSeconds = 30;
    // The cross-field check runs only once the shapes are valid; fixing the first reveals the second.
    input.grants['artifacts-api'].maxTtlSeconds = 60;
    expect(configErrorOf(input)).toMatch(/admins\.0\.issuer: no issuer named "okta"/);
  });

  it('refuses an audit retention without an audit file: trimming would delete the only record', () => {
    const input: any = validInput();
    input.audit = { retentionSeconds: 86400 };
    expect(configErrorOf(input)).toMatch(
      /audit\.retentionSeconds: needs audit\.file: the stream is only trimmed of what an audit file holds/,
    );
    input.audit.file = './audit.jsonl';
    expect(parseConfig(input, '/etc/tasklease').audit).toMatchObject({
      retentionSeconds: 86400,
      file: '/etc/tasklease/audit.jsonl',
    });
  });
});

describe('readEnv', () => {
  it('defaults PORT to 8080 and HOST to 127.0.0.1 (loopback unless told otherwise)', () => {
    const env = readEnv({});
    expect(env).toMatchObject({ PORT: 8080, HOST: '127.0.0.1', WORKER_PORT: 8081, LOG_LEVEL: 'info' });
    expect(env.TASKLEASE_SIGNING_KEYS).toBeUndefined();
    expect(Object.isFrozen(env)).toBe(true);
  });

  it('reads the values it is given', () => {
    expect(readEnv({ PORT: '9000', HOST: '0.0.0.0', REDIS_URL: 'rediss://cache:6380/1' })).toMatchObject({
      PORT: 9000,
      HOST: '0.0.0.0',
      REDIS_URL: 'rediss://cache:6380/1',
    });
  });

  it.each([
    ['PORT', { PORT: 'eighty' }],
    ['PORT', { PORT: '70000' }],
    ['PORT', { PORT: '80.5' }],
    ['WORKER_PORT', { WORKER_PORT: '-1' }],
    ['REDIS_URL', { REDIS_URL: 'http://localhost:6379' }],
    ['REDIS_URL', { REDIS_URL: 'localhost:6379' }],
    ['LOG_LEVEL', { LOG_LEVEL: 'verbose' }],
  ])('refuses a bad %s, naming it', (variable, env) => {
    expect(() => readEnv(env)).toThrow(ConfigError);
    expect(() => readEnv(env)).toThrow(new RegExp(`^invalid environment:\\n${variable}: `));
  });
});

describe('loadConfigFile', () => {
  const dir = tempDir('config-test');

  it('loads a YAML file and resolves paths against its directory', () => {
    mkdirSync(path.join(dir, 'ok'));
    const file = path.join(dir, 'ok', 'tasklease.yaml');
    writeFileSync(
      file,
      [
        'issuers:',
        '  - name: corp',
        '    kind: oidc',
        '    issuer: https://idp.example.com',
        '    jwksFile: corp.jwks.json',
        '    audiences: [tasklease]',
        'grants:',
        '  artifacts-api: {provider: jwt, audience: https://artifacts.internal, maxTtlSeconds: 600}',
        'policies: ./policies',
      ].join('\n'),
    );
    const config = loadConfigFile(file);
    expect(config.policies).toBe(path.join(dir, 'ok', 'policies'));
    expect(config.issuers[0]?.jwksFile).toBe(path.join(dir, 'ok', 'corp.jwks.json'));
  });

  it('says which file is not valid YAML', () => {
    const file = path.join(dir, 'broken.yaml');
    writeFileSync(file, 'issuers:\n  - name: corp\n    audiences: [tasklease\n');
    expect(() => loadConfigFile(file)).toThrow(ConfigError);
    expect(() => loadConfigFile(file)).toThrow(`config file ${file} is not valid YAML`);
  });

  it('says which file cannot be read', () => {
    const file = path.join(dir, 'missing.yaml');
    expect(() => loadConfigFile(file)).toThrow(ConfigError);
    expect(() => loadConfigFile(file)).toThrow(
      new RegExp(`^cannot read config file ${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: ENOENT`),
    );
  });

  it('names the field when the YAML is valid but the configuration is not', () => {
    const file = path.join(dir, 'invalid.yaml');
    writeFileSync(file, 'issuers: []\ngrants: {}\npolicies: ./p\n');
    expect(() => loadConfigFile(file)).toThrow(/invalid configuration:\nissuers: /);
  });
});
