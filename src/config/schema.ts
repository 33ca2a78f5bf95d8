import { z } from 'zod';
import { ADMIN_ROLES, BREAK_GLASS_ISSUER } from '../domain/types';
import { breakGlassEntrySchema, checkBreakGlass, pathsOfPlaintextTokens } from './break-glass';
import { name } from './names';
import { checkSessionPolicyTemplate } from './session-policy-template';

const seconds = (max: number) => z.number().int().positive().max(max);

export const ASYMMETRIC_ALGORITHMS = [
  'RS256',
  'RS384',
  'RS512',
  'PS256',
  'PS384',
  'PS512',
  'ES256',
  'ES384',
  'ES512',
  'EdDSA',
] as const;

const issuerSchema = z
  .strictObject({
    name,
    kind: z.enum(['github-actions', 'gitlab', 'kubernetes', 'spiffe', 'oidc']),
    issuer: z.string().min(1),
    jwksUri: z.url({ protocol: /^https?$/ }).optional(),
    jwksFile: z.string().min(1).optional(),
    audiences: z.array(z.string().min(1)).min(1),
    subjectClaim: z.string().min(1).default('sub'),
    /** A token whose `exp - iat` exceeds this is refused (bounds replay of a stolen token). */
    maxTokenLifetimeSeconds: seconds(7 * 24 * 3600).default(3600),
    clockSkewSeconds: z.number().int().min(0).max(300).default(30),
    /** Narrows the asymmetric allowlist further; HMAC and `none` can never be listed. */
    algorithms: z
      .array(z.enum(ASYMMETRIC_ALGORITHMS))
      .min(1)
      .default([...ASYMMETRIC_ALGORITHMS]),
    /** How often a remote JWKS is refreshed in the background. */
    jwksRefreshSeconds: seconds(86400).default(300),
    /**
     * Token exchange: the claims that name one job, so its exchanges meet in one task. Omitted, the kind's
     * preset (docs/token-exchange.md); [] makes each token its own job.
     */
    jobClaims: z.array(z.string().min(1)).max(10).optional(),
  })
  .refine((i) => Boolean(i.jwksUri) !== Boolean(i.jwksFile), {
    message: 'give exactly one of jwksUri or jwksFile',
    path: ['jwksUri'],
  });

const grantCommon = {
  maxTtlSeconds: seconds(12 * 3600),
  sensitivity: z.enum(['low', 'medium', 'high']).default('low'),
  /** `required`: every credential of this grant waits for a human's step-up approval (docs/approvals.md). */
  approval: z.enum(['none', 'required']).default('none'),
  /**
   * Separation of duties between stages (generate → review → export): an identity that was issued one of
   * these grants for the same ticket (or, without a ticket, the same task) may not approve this grant.
   */
  approverMustNotHold: z.array(name).max(20).default([]),
  /**
   * `required`: a credential of this grant is issued only to a workload holding an active entitlement to it
   * (an approved, unexpired, unrevoked entitlement under an active enrolment; docs/entitlements.md).
   */
  entitlement: z.enum(['none', 'required']).default('none'),
};

const jwtGrantSchema = z.strictObject({
  provider: z.literal('jwt'),
  audience: z.string().min(1),
  scopes: z.array(z.string().regex(/^[\x21\x23-\x5b\x5d-\x7e]+$/, 'RFC 6749 scope token')).default([]),
  ...grantCommon,
});

const httpUrl = z.url({ protocol: /^https?$/ });

/**
 * Where the broker POSTs a notification: https, or http to loopback (a local relay); never with a user or
 * password in it (the URL is configuration, and the body may go through proxies that log it).
 */
const webhookUrl = httpUrl.refine((text) => {
  const url = new URL(text);
  const loopback = ['127.0.0.1', 'localhost', '[::1]'].includes(url.hostname);
  return !url.username && !url.password && (url.protocol === 'https:' || loopback);
}, 'https:// (http:// only to loopback), without user or password');

/** STS's bounds on a role session: 15 minutes to 12 hours (one hour when the broker itself runs on a role). */
export const STS_MIN_SECONDS = 900;
const STS_MAX_SECONDS = 43_200;
export const DEFAULT_REVOCATION_POLICY_NAME = 'tasklease-revoked-sessions';
export const IAM_INLINE_POLICY_MAX_CHARS = 10_240;

const awsStsGrantSchema = z.strictObject({
  provider: z.literal('aws-sts'),
  roleArn: z.string().regex(/^arn:aws[a-z-]*:iam::\d{12}:role\/[\w+=,.@/-]{1,512}$/, 'an IAM role ARN'),
  /** Managed policies that further limit the session (at most 10, STS's limit). */
  policyArns: z
    .array(z.string().regex(/^arn:aws[a-z-]*:iam::(aws|\d{12}):policy\/[\w+=,.@/-]+$/, 'a policy ARN'))
    .max(10)
    .default([]),
  /** An IAM policy document; string values may hold ${task.*} and ${identity.*} placeholders. */
  sessionPolicy: z
    .record(z.string(), z.unknown())
    .superRefine((template, ctx) => {
      for (const problem of checkSessionPolicyTemplate(template))
        ctx.addIssue({ code: 'custom', message: problem });
    })
    .optional(),
  externalId: z
    .string()
    .regex(/^[\w+=,.@:/-]{2,1224}$/, 'an external id')
    .optional(),
  region: z
    .string()
    .regex(/^[a-z]{2}(-[a-z]+)+-\d+$/, 'an AWS region')
    .default('us-east-1'),
  /** STS endpoint; omitted, the SDK's regional default. */
  endpoint: httpUrl.optional(),
  /** IAM endpoint for revocation writes; omitted, the SDK's default. */
  iamEndpoint: httpUrl.optional(),
  /** The inline role policy the broker owns and writes its denies into. */
  revocationPolicyName: z
    .string()
    .regex(/^[\w+=,.@-]{1,128}$/)
    .default(DEFAULT_REVOCATION_POLICY_NAME),
  /**
   * Characters the broker's inline policy may use. IAM allows 10,240 for all of a role's inline policies
   * together: lower this by the size of the role's other inline policies.
   */
  revocationPolicyMaxChars: z
    .number()
    .int()
    .min(1000)
    .max(IAM_INLINE_POLICY_MAX_CHARS)
    .default(IAM_INLINE_POLICY_MAX_CHARS),
  ...grantCommon,
  maxTtlSeconds: z.number().int().min(STS_MIN_SECONDS).max(STS_MAX_SECONDS),
});

/** A Vault path segment list, e.g. `database/creds/readonly`; no `..`, no query. */
const VAULT_PATH = /^[A-Za-z0-9_.-]+(\/[A-Za-z0-9_.@=-]+)+$/;
/** Mounts that never hand out a leased secret by a read: refused so a grant cannot point at them by mistake. */
const VAULT_RESERVED_MOUNTS = ['sys', 'auth', 'identity', 'cubbyhole'];
/** A Vault Enterprise / OpenBao namespace path, e.g. `team-a` or `org/team-a`. */
export const vaultNamespace = z
  .string()
  .regex(/^[A-Za-z0-9_-]+(\/[A-Za-z0-9_-]+)*\/?$/, 'a Vault namespace path such as team-a or org/team-a');

const vaultCommon = {
  provider: z.literal('vault'),
  /** The namespace this grant's calls go to; omitted, the broker's own (VAULT_NAMESPACE). */
  namespace: vaultNamespace.optional(),
  ...grantCommon,
};

const vaultTokenGrantSchema = z.strictObject({
  ...vaultCommon,
  mode: z.literal('token'),
  /**
   * Required: a child token created without policies would inherit every policy of the broker's own token.
   * `root` can never be listed.
   */
  policies: z
    .array(z.string().regex(/^[\w.@-]{1,128}$/, 'a Vault policy name'))
    .min(1, 'list the policies the token gets (without them it would inherit the broker’s own)')
    .refine((policies) => !policies.includes('root'), 'the root policy can never be granted'),
  /** A token role: the token is created at auth/token/create/<role> (e.g. one with orphan=true). */
  role: z
    .string()
    .regex(/^[\w.-]{1,128}$/, 'a token role name')
    .optional(),
  /** Uses before Vault revokes the token by itself; 0 = unlimited until revoked or expired. */
  numUses: z.number().int().min(0).max(1_000_000).default(0),
  noDefaultPolicy: z.boolean().default(false),
});

const vaultDynamicGrantSchema = z.strictObject({
  ...vaultCommon,
  mode: z.literal('dynamic'),
  /** Read to obtain the secret, e.g. database/creds/readonly or aws/creds/deploy. */
  path: z
    .string()
    .regex(VAULT_PATH, 'a Vault path such as database/creds/readonly')
    .refine((path) => !path.split('/').some((segment) => /^\.+$/.test(segment)), 'no . or .. segments')
    .refine(
      (path) => !VAULT_RESERVED_MOUNTS.includes(path.split('/')[0] ?? ''),
      `a secrets engine path, not one under ${VAULT_RESERVED_MOUNTS.join('/, ')}/`,
    ),
});

const vaultGrantSchema = z.discriminatedUnion('mode', [vaultTokenGrantSchema, vaultDynamicGrantSchema]);

export const grantSchema = z.discriminatedUnion('provider', [
  jwtGrantSchema,
  awsStsGrantSchema,
  vaultGrantSchema,
]);

const vaultMount = z.string().regex(/^[\w.-]+(\/[\w.-]+)*$/, 'an auth mount path such as approle');

/**
 * How the broker reaches Vault and who it is there. Every field left out falls back to Vault's standard
 * variable (VAULT_ADDR, VAULT_NAMESPACE, VAULT_CACERT, VAULT_CLIENT_TIMEOUT); the secrets (VAULT_TOKEN, an
 * AppRole secret id, a JWT) never sit in this file.
 */
const vaultConnectionSchema = z.strictObject({
  address: httpUrl.optional(),
  namespace: vaultNamespace.optional(),
  /** PEM bundle of the CAs that may sign Vault's TLS certificate. */
  caCertFile: z.string().min(1).optional(),
  timeoutSeconds: z.number().int().min(1).max(300).optional(),
  auth: z
    .discriminatedUnion('method', [
      /** VAULT_TOKEN, renewed by the broker when Vault says it is renewable. */
      z.strictObject({ method: z.literal('token') }),
      z.strictObject({
        method: z.literal('approle'),
        mount: vaultMount.default('approle'),
        roleId: z.string().min(1),
        /** A file holding the secret id (mounted by the orchestrator), read at each login. */
        secretIdFile: z.string().min(1),
      }),
      z.strictObject({
        method: z.literal('jwt'),
        mount: vaultMount.default('jwt'),
        role: z.string().min(1),
        /** A file holding the JWT, e.g. a projected Kubernetes service-account token, read at each login. */
        jwtFile: z.string().min(1),
      }),
    ])
    .default({ method: 'token' }),
});

const roleSchema = z.enum(ADMIN_ROLES);
const principalsSchema = z.strictObject({
  issuer: name,
  subjects: z.array(z.string().min(1)).min(1),
});

export const configSchema = z
  .strictObject({
    issuers: z.array(issuerSchema).min(1),
    grants: z.record(name, grantSchema),
    vault: vaultConnectionSchema.optional(),
    policies: z.string().min(1),
    admins: z
      .array(principalsSchema.extend({ roles: z.array(roleSchema).min(1).default(['admin']) }))
      .default([]),
    breakGlass: z.array(breakGlassEntrySchema).default([]),
    /**
     * Identities allowed to introspect broker-issued tokens (RFC 7662), besides admins.
     * `audiences`: the token audiences this resource server may introspect; a token for any other audience
     * answers inactive to it. Omitted: every broker-issued token.
     */
    resourceServers: z
      .array(principalsSchema.extend({ audiences: z.array(z.string().min(1)).min(1).optional() }))
      .default([]),
    broker: z
      .strictObject({
        /** `iss` of broker-signed JWTs and task records. */
        issuer: z.string().min(1).default('tasklease'),
        /**
         * Put before every key. Omitted: `tl:`, or `{tl}:` on Redis Cluster, where the prefix must carry a hash
         * tag so every key shares one slot (checked at start-up, where the topology is known).
         */
        redisPrefix: z
          .string()
          .regex(/^[A-Za-z0-9:_{}-]{1,32}$/, 'letters, digits, ":", "_", "-" and a {hash tag}')
          .optional(),
        /**
         * Replicas (Redis `WAIT`) that must hold each lease write, task completion, revocation request and
         * settlement before it counts: the credential leaves, the revocation is answered. 0 = the primary's
         * word alone. On a timeout the minted credential is revoked and the caller gets 503 not_replicated.
         */
        replicaAcks: z.number().int().min(0).max(16).default(0),
        replicaAckTimeoutMs: z.number().int().min(10).max(10_000).default(500),
        /**
         * How long this process keeps its lease writes to re-apply them after the primary changes (a failover
         * or a restart): a write a replica acknowledged may still be missing from the replica that was promoted.
         */
        failoverReplaySeconds: z.number().int().min(0).max(600).default(60),
        /** At most this many writes are kept for that (the oldest go first). */
        failoverReplayMaxWrites: z.number().int().min(0).max(1_000_000).default(100_000),
        defaultTaskTtlSeconds: seconds(7 * 86400).default(3600),
        maxTaskTtlSeconds: seconds(7 * 86400).default(86400),
        /** Cap on active leases across the broker; beyond it, issuance answers 429. */
        maxActiveLeases: z.number().int().positive().default(1_000_000),
        /** Quotas on unsettled leases per identity (issuer + subject) and per task; omitted, none. */
        maxActiveLeasesPerIdentity: z.number().int().positive().optional(),
        maxActiveLeasesPerTask: z.number().int().positive().optional(),
        /**
         * Open tasks (declared, neither completed nor expired) per identity, token exchange's job tasks
         * included; beyond it, declaring answers 429 task_limit_reached. 0 = no quota.
         */
        maxOpenTasksPerIdentity: z.number().int().min(0).max(1_000_000).default(1000),
        /**
         * Requests per minute per identity on the workload and admin API and token exchange, counted in Redis so
         * the limit holds across replicas; omitted, no limit.
         */
        requestsPerMinutePerIdentity: z.number().int().positive().max(1_000_000).optional(),
        /**
         * Refusals per minute per identity that are audited one by one (a forbidden admin call, a policy
         * denial, a replayed token): beyond it one `refusal.limited` event, then 429 too_many_refusals,
         * counted but not audited, until the minute is over.
         */
        refusalsPerMinutePerIdentity: z.number().int().positive().max(10_000).default(30),
        /**
         * Worker threads the API evaluates Cedar on, off its event loop (docs/architecture.md, "Policy
         * threads"); 0 evaluates on the event loop. One keeps up with a whole API process.
         */
        policyThreads: z.number().int().min(0).max(4).default(1),
        /** How long a settled lease and a finished task stay readable. */
        retentionSeconds: seconds(90 * 86400).default(7 * 86400),
      })
      .prefault({}),
    /**
     * The API's HTTP server: how long a client may take to send its headers and its whole request, how long an
     * idle keep-alive connection stays open, and how many connections it holds at once (docs/architecture.md,
     * "Timeouts and limits").
     */
    http: z
      .strictObject({
        headersTimeoutMs: z.number().int().min(100).max(120_000).default(10_000),
        /** The whole request, body included (at most 64 KiB); never shorter than the headers' deadline. */
        requestTimeoutMs: z.number().int().min(100).max(600_000).default(30_000),
        /** Above a load balancer's own idle timeout (60 s on AWS ALB), so it never reuses a closed socket. */
        keepAliveTimeoutMs: z.number().int().min(100).max(600_000).default(65_000),
        /** Open connections per API process; beyond it a new connection is closed at once. */
        maxConnections: z.number().int().min(1).max(1_000_000).default(4096),
      })
      .refine((http) => http.headersTimeoutMs <= http.requestTimeoutMs, {
        path: ['requestTimeoutMs'],
        message: 'must be at least headersTimeoutMs (the request includes its headers)',
      })
      .prefault({}),
    /** Where on-call hears of leases that could not be revoked. */
    alerts: z
      .strictObject({
        /** POSTed a JSON summary when leases become irrevocable; https, or http to loopback. */
        irrevocableWebhook: webhookUrl.optional(),
        /** Irrevocable leases within this window go out as one alert. */
        debounceSeconds: z.number().int().min(1).max(3600).default(30),
      })
      .prefault({}),
    /** The hash-chained audit log (docs/architecture.md, "The audit log"). */
    audit: z
      .strictObject({
        /** How often the API seals (chains and signs) newly appended events; an event is unsealed this long. */
        sealIntervalMs: z.number().int().min(100).max(60_000).default(1000),
        /** A JSONL copy of the sealed log, kept by `tasklease worker` (and dev) on its own disk. */
        file: z.string().min(1).optional(),
        /**
         * Events older than this are trimmed from the stream in Redis, once sealed and written to every
         * worker's audit file; unset, never (docs/architecture.md, "Retention").
         */
        retentionSeconds: seconds(10 * 365 * 86400).optional(),
      })
      // Fails closed: without a copy outside Redis, trimming would delete the only record.
      .refine((audit) => audit.retentionSeconds === undefined || audit.file !== undefined, {
        path: ['retentionSeconds'],
        message: 'needs audit.file: the stream is only trimmed of what an audit file holds',
      })
      .prefault({}),
    /** Step-up approvals (docs/approvals.md). */
    approvals: z
      .strictObject({
        /** A request no approver decides within this long expires (never beyond its task). */
        pendingTtlSeconds: z.number().int().min(60).max(86400).default(900),
        /** An approval not used within this long of its decision expires. */
        useWithinSeconds: z.number().int().min(60).max(86400).default(900),
        /** POSTed each new approval request (no secrets), at once; https, or http to loopback. */
        webhook: webhookUrl.optional(),
      })
      .prefault({}),
    /** Enrolments and entitlements: standing approvals of a workload and of its grants (docs/entitlements.md). */
    entitlements: z
      .strictObject({
        /** A proposed enrolment or entitlement no approver decides within this long lapses. */
        reviewWithinDays: z.number().int().min(1).max(90).default(7),
        /** The longest an enrolment or entitlement is valid for, at proposal and at each recertification. */
        maxValidityDays: z.number().int().min(1).max(730).default(90),
        /** `entitlements due` lists active entitlements expiring within this many days (unless told otherwise). */
        dueWithinDays: z.number().int().min(1).max(365).default(14),
      })
      .prefault({}),
    /** RFC 8693 token exchange at POST /v1/token. */
    tokenExchange: z
      .strictObject({
        /** once-per-grant: a subject token is exchanged at most once for each grant (replay refused). */
        replay: z.enum(['once-per-grant', 'allow']).default('once-per-grant'),
        /** How long a job's task stays open (capped by broker.maxTaskTtlSeconds); GitHub jobs run up to 6 h. */
        taskTtlSeconds: seconds(7 * 86400).default(6 * 3600),
      })
      .prefault({}),
    revocation: z
      .strictObject({
        attempts: z.number().int().min(1).max(50).default(8),
        backoffMs: z.number().int().min(10).max(60_000).default(500),
        concurrency: z.number().int().min(1).max(1000).default(64),
        /** How often the scheduler moves the leases due now into revocation jobs (in bulk). */
        scheduleIntervalMs: z.number().int().min(20).max(10_000).default(200),
        sweepIntervalMs: z.number().int().min(100).max(60_000).default(1000),
        /**
         * A lease the scheduler queued that is still unsettled this long after comes due again and is queued
         * again; the sweeper re-queues whatever is overdue by this much (a stopped scheduler, a lost job).
         */
        sweepGraceMs: z.number().int().min(0).max(60_000).default(5000),
        irrevocableRetrySeconds: seconds(86400).default(60),
      })
      .prefault({}),
  })
  .superRefine((config, ctx) => {
    const issuerNames = new Set<string>();
    config.issuers.forEach((issuer, index) => {
      // Reserved: a configured issuer of that name could otherwise pass for a break-glass caller in the audit.
      if (issuer.name === BREAK_GLASS_ISSUER) {
        ctx.addIssue({
          code: 'custom',
          path: ['issuers', index, 'name'],
          message: `"${BREAK_GLASS_ISSUER}" is reserved for break-glass callers`,
        });
      }
      if (issuerNames.has(issuer.name)) {
        ctx.addIssue({
          code: 'custom',
          path: ['issuers', index, 'name'],
          message: `duplicate issuer name "${issuer.name}"`,
        });
      }
      issuerNames.add(issuer.name);
    });
    const checkIssuer = (list: 'admins' | 'resourceServers') =>
      config[list].forEach((entry, index) => {
        if (!issuerNames.has(entry.issuer)) {
          ctx.addIssue({
            code: 'custom',
            path: [list, index, 'issuer'],
            message: `no issuer named "${entry.issuer}"`,
          });
        }
      });
    checkIssuer('admins');
    checkIssuer('resourceServers');
    checkBreakGlass(config.breakGlass, ctx);
    for (const path of pathsOfPlaintextTokens(config)) {
      ctx.addIssue({
        code: 'custom',
        path,
        message: 'a break-glass token in the config: only its SHA-256 belongs here (breakGlass.tokenSha256)',
      });
    }
    for (const [grantName, grant] of Object.entries(config.grants)) {
      grant.approverMustNotHold.forEach((held, index) => {
        if (!Object.hasOwn(config.grants, held))
          ctx.addIssue({
            code: 'custom',
            path: ['grants', grantName, 'approverMustNotHold', index],
            message: `no grant named "${held}"`,
          });
      });
    }
    if (config.broker.defaultTaskTtlSeconds > config.broker.maxTaskTtlSeconds) {
      ctx.addIssue({
        code: 'custom',
        path: ['broker', 'defaultTaskTtlSeconds'],
        message: 'exceeds maxTaskTtlSeconds',
      });
    }
  });

export type ConfigInput = z.input<typeof configSchema>;
export type Config = z.output<typeof configSchema>;
export type IssuerConfig = Config['issuers'][number];
export type GrantConfig = Config['grants'][string];
export type JwtGrantConfig = z.output<typeof jwtGrantSchema>;
export type AwsStsGrantConfig = z.output<typeof awsStsGrantSchema>;
export type VaultGrantConfig = z.output<typeof vaultGrantSchema>;
export type VaultConnectionConfig = z.output<typeof vaultConnectionSchema>;
export type AdminRole = z.output<typeof roleSchema>;
export type { BreakGlassConfig } from './break-glass';
