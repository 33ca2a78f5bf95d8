import type { AssumeRoleCommandOutput } from '@aws-sdk/client-sts';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Redis } from 'ioredis';
import type { AwsStsGrantConfig, Config } from '../../config/schema';
import { renderSessionPolicy } from '../../config/session-policy';
import { BrokerError } from '../../domain/errors';
import type { Identity, Task } from '../../domain/types';
import type { RedisKeys } from '../../leases/keys';
import type { CredentialProvider, MintRequest } from '../provider';
import type { AwsClients } from './aws-clients';
import { createRoleDenyList, type DenyOutcome } from './role-deny-list';
import { roleSessionName, sourceIdentity, tagValue } from './naming';

/** STS's shortest session. A lease may be shorter: the broker then denies the session when the lease ends. */
const STS_MIN_SECONDS = 900;
/** A session this close to its own expiry is waited out rather than denied: the deny could not land sooner. */
const EXPIRY_WAIT_MS = 3_000;
const DEFAULT_POLICY_NAME = 'tasklease-revoked-sessions';

/** STS errors that say the broker is not allowed or not set up to mint; everything else is an outage. */
const REFUSALS = new Set([
  'AccessDenied',
  'AccessDeniedException',
  'MalformedPolicyDocument',
  'MalformedPolicyDocumentException',
  'RegionDisabledException',
  'ExpiredTokenException',
  'ValidationError',
  'InvalidClientTokenId',
  'UnrecognizedClientException',
]);

const iso = (ms: number) => new Date(ms).toISOString();

function placeholderValues(task: Task, identity: Identity) {
  return (namespace: 'task' | 'identity', path: string): string | undefined => {
    if (namespace === 'task')
      return path === 'id'
        ? task.id
        : path === 'ticket'
          ? task.ticket
          : path === 'ref'
            ? task.ref
            : undefined;
    if (path === 'subject') return identity.subject;
    if (path === 'issuer') return identity.issuer;
    return identity.claims[path.slice('claims.'.length)];
  };
}

function mintError(error: unknown): BrokerError {
  const name = (error as Error).name;
  const detail = `${name}: ${(error as Error).message}`;
  if (name === 'PackedPolicyTooLargeException' || name === 'PackedPolicyTooLarge')
    return new BrokerError(
      'session_policy_too_large',
      'STS refused the session policy and tags as too large once packed; shorten the policy or the task fields',
      { detail, cause: error },
    );
  if (REFUSALS.has(name))
    return new BrokerError('backend_refused', 'AWS STS refused to issue the session; nothing was issued', {
      detail,
      cause: error,
    });
  return new BrokerError('unavailable', 'a backend the broker needs is unavailable; nothing was issued', {
    detail,
    cause: error,
  });
}

function describeDeny(
  outcome: DenyOutcome,
  roleArn: string,
  sessionId: string,
  notAfterMs: number,
  policyName: string,
) {
  switch (outcome.kind) {
    case 'listed':
      return {
        revocation: 'deny-applied',
        detail:
          `explicit deny for session ${sessionId} written to inline policy ${policyName} of ${roleArn}; IAM applies ` +
          `it within seconds (eventual consistency); the keys themselves stay valid until ${iso(notAfterMs)}, every call they make denied`,
      };
    case 'cutoff':
      return {
        revocation: 'deny-applied-role-cutoff',
        detail:
          `the deny list of ${roleArn} was full: every session of the role issued before ${iso(outcome.cutoffMs)} is denied ` +
          `(inline policy ${policyName}), this one among them; IAM applies it within seconds`,
      };
    case 'expired':
      return { revocation: 'expired-at-source', detail: `the session expired at STS at ${iso(notAfterMs)}` };
  }
}

/**
 * AWS STS sessions. Minting is AssumeRole with a session policy rendered for the task, session tags and a
 * source identity. STS cannot revoke a session; the broker does the next best thing and says so: an
 * explicit deny for exactly that session in an inline policy of the role (see role-deny-list.ts).
 */
export function createAwsStsProvider(deps: {
  config: Pick<Config, 'grants'>;
  redis: Redis;
  keys: RedisKeys;
  clients: AwsClients;
}): CredentialProvider {
  const { config, clients } = deps;
  const denyList = createRoleDenyList({
    redis: deps.redis,
    keys: deps.keys,
    iam: (target) => clients.rolePolicies(target.where),
  });

  return {
    kind: 'aws-sts',
    revocationSemantics:
      'An STS session cannot be revoked. The broker writes an explicit deny for that one session into an inline ' +
      'policy of the role; IAM applies it within seconds, and the keys stay valid (every call denied) until ' +
      'their expiry. When the role’s deny list is full, every older session of the role is cut by time instead.',

    async mint(request: MintRequest) {
      const { leaseId, grant, identity, task, issuedAtMs, expiresAtMs } = request;
      if (grant.provider !== 'aws-sts') throw new Error('aws-sts provider given another grant');
      const leaseSeconds = Math.ceil((expiresAtMs - issuedAtMs) / 1000);
      const durationSeconds = Math.min(Math.max(STS_MIN_SECONDS, leaseSeconds), grant.maxTtlSeconds);
      const policy = grant.sessionPolicy
        ? renderSessionPolicy(grant.sessionPolicy, placeholderValues(task, identity))
        : undefined;
      const tags = [
        { Key: 'task', Value: tagValue(task.id) },
        { Key: 'lease', Value: tagValue(leaseId) },
        ...(task.ticket ? [{ Key: 'ticket', Value: tagValue(task.ticket) }] : []),
      ];
      let answer: AssumeRoleCommandOutput;
      try {
        answer = await clients.assumeRole(grant, {
          RoleArn: grant.roleArn,
          RoleSessionName: roleSessionName(leaseId),
          DurationSeconds: durationSeconds,
          Policy: policy,
          PolicyArns: grant.policyArns.length ? grant.policyArns.map((arn) => ({ arn })) : undefined,
          ExternalId: grant.externalId,
          SourceIdentity: sourceIdentity(identity.subject),
          Tags: tags,
        });
      } catch (error) {
        throw mintError(error);
      }
      const credentials = answer.Credentials;
      const user = answer.AssumedRoleUser;
      if (
        !credentials?.AccessKeyId ||
        !credentials.SecretAccessKey ||
        !credentials.SessionToken ||
        !user?.AssumedRoleId
      )
        throw new BrokerError(
          'unavailable',
          'a backend the broker needs is unavailable; nothing was issued',
          {
            detail: 'AssumeRole answered without credentials',
          },
        );
      const notAfterMs = credentials.Expiration?.getTime() ?? issuedAtMs + durationSeconds * 1000;
      return {
        credential: {
          accessKeyId: credentials.AccessKeyId,
          secretAccessKey: credentials.SecretAccessKey,
          sessionToken: credentials.SessionToken,
          expiration: iso(notAfterMs),
        },
        secret: credentials.SessionToken,
        handle: {
          roleArn: grant.roleArn,
          sessionId: user.AssumedRoleId,
          sessionArn: user.Arn ?? '',
          // Not a secret (CloudTrail logs it on every call): it ties CloudTrail events to this lease.
          accessKeyId: credentials.AccessKeyId,
          // STS's own clock: the session was issued `durationSeconds` before it expires.
          issuedAtMs: String(notAfterMs - durationSeconds * 1000),
          notAfterMs: String(notAfterMs),
          policyName: grant.revocationPolicyName,
        },
        notAfterMs,
      };
    },

    async revoke(lease, { nowMs }) {
      const handle = lease.handle;
      const notAfterMs = Number(handle.notAfterMs);
      if (!handle.roleArn || !handle.sessionId || !Number.isFinite(notAfterMs))
        throw new Error(`lease ${lease.id} has no STS session on record`);
      const remainingMs = notAfterMs - nowMs;
      if (remainingMs <= EXPIRY_WAIT_MS) {
        if (remainingMs > 0) await sleep(remainingMs + 50);
        return describeDeny({ kind: 'expired' }, handle.roleArn, handle.sessionId, notAfterMs, '');
      }
      const configured = config.grants[lease.grant];
      const grant: Partial<AwsStsGrantConfig> = configured?.provider === 'aws-sts' ? configured : {};
      const policyName = handle.policyName || grant.revocationPolicyName || DEFAULT_POLICY_NAME;
      const target = {
        roleArn: handle.roleArn,
        policyName,
        maxChars: grant.revocationPolicyMaxChars ?? 10_240,
        where: { region: grant.region ?? 'us-east-1', iamEndpoint: grant.iamEndpoint },
      };
      const startedMs = Date.now();
      const outcome = await denyList.deny(
        target,
        { sessionId: handle.sessionId, notAfterMs, issuedAtMs: Number(handle.issuedAtMs) || 0 },
        () => nowMs + (Date.now() - startedMs),
      );
      return describeDeny(outcome, handle.roleArn, handle.sessionId, notAfterMs, policyName);
    },
  };
}
