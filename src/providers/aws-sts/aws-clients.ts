import {
  GetRolePolicyCommand,
  IAMClient,
  LimitExceededException,
  NoSuchEntityException,
  PutRolePolicyCommand,
} from '@aws-sdk/client-iam';
import {
  AssumeRoleCommand,
  GetCallerIdentityCommand,
  STSClient,
  type AssumeRoleCommandInput,
  type AssumeRoleCommandOutput,
} from '@aws-sdk/client-sts';
import { PolicyTooLargeError, type RolePolicyStore } from './role-deny-list';

/**
 * The AWS SDK clients the provider uses, one per region and endpoint, shared by every grant that names the
 * same. Credentials come from the SDK's default chain (environment, shared config, web identity, container
 * or instance role); the broker holds no AWS secret of its own. Timeouts are short: a slow call fails and
 * the caller (issuance: the agent; revocation: the queue's retry ladder) decides what happens next.
 */
const SDK_OPTIONS = {
  maxAttempts: 2,
  // Without throwOnRequestTimeout the SDK only logs a warning at requestTimeout and waits on a hung server.
  requestHandler: { connectionTimeout: 2_000, requestTimeout: 5_000, throwOnRequestTimeout: true },
} as const;

/**
 * Every AWS call ends by this deadline, retries included (an abort, not a warning): a credential call
 * answers within 15 s however STS behaves, and a revocation attempt fails into the retry ladder.
 */
export const AWS_CALL_DEADLINE_MS = 12_000;
const deadline = () => ({ abortSignal: AbortSignal.timeout(AWS_CALL_DEADLINE_MS) });

export interface AwsClients {
  assumeRole(
    where: { region: string; endpoint?: string },
    input: AssumeRoleCommandInput,
  ): Promise<AssumeRoleCommandOutput>;
  /** The account of the broker's own credentials (asked once per STS endpoint, again after a failure). */
  callerAccount(where: { region: string; endpoint?: string }): Promise<string>;
  rolePolicies(where: { iamEndpoint?: string; region: string }): RolePolicyStore;
  destroy(): void;
}

/** One value per region and endpoint, made on first use. */
function perEndpoint<T>(create: (region: string, endpoint?: string) => T) {
  const made = new Map<string, T>();
  return {
    get(region: string, endpoint?: string): T {
      const key = `${region} ${endpoint ?? ''}`;
      let value = made.get(key);
      if (value === undefined) made.set(key, (value = create(region, endpoint)));
      return value;
    },
    forget: (region: string, endpoint?: string) => made.delete(`${region} ${endpoint ?? ''}`),
    values: () => [...made.values()],
  };
}

export function createAwsClients(): AwsClients {
  const sts = perEndpoint((region, endpoint) => new STSClient({ region, endpoint, ...SDK_OPTIONS }));
  const iam = perEndpoint((region, endpoint) => new IAMClient({ region, endpoint, ...SDK_OPTIONS }));
  const accounts = perEndpoint((region, endpoint) => {
    const account = sts
      .get(region, endpoint)
      .send(new GetCallerIdentityCommand({}), deadline())
      .then((answer) => answer.Account ?? '');
    // A failed lookup is asked again next time, not remembered.
    account.catch(() => accounts.forget(region, endpoint));
    return account;
  });
  return {
    assumeRole: ({ region, endpoint }, input) =>
      sts.get(region, endpoint).send(new AssumeRoleCommand(input), deadline()),
    callerAccount: ({ region, endpoint }) => accounts.get(region, endpoint),
    rolePolicies: ({ region, iamEndpoint }) => {
      const client = iam.get(region, iamEndpoint);
      return {
        async get(RoleName, PolicyName) {
          try {
            const answer = await client.send(new GetRolePolicyCommand({ RoleName, PolicyName }), deadline());
            return answer.PolicyDocument;
          } catch (error) {
            // No inline policy yet is the normal start. A missing role also answers NoSuchEntity, but without
            // the word "policy"; it stays an error (and the write would fail on it anyway).
            if (error instanceof NoSuchEntityException && /policy/i.test(error.message)) return undefined;
            throw error;
          }
        },
        async put(RoleName, PolicyName, PolicyDocument) {
          try {
            await client.send(new PutRolePolicyCommand({ RoleName, PolicyName, PolicyDocument }), deadline());
          } catch (error) {
            if (error instanceof LimitExceededException) throw new PolicyTooLargeError(error.message);
            throw error;
          }
        },
      };
    },
    destroy() {
      for (const client of [...sts.values(), ...iam.values()]) client.destroy();
    },
  };
}
