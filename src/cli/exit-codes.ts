/** The CLI's exit codes, in one place (the README lists them). */
export const EXIT = {
  ok: 0,
  error: 1,
  usage: 2,
  /** `policy check`: the policy denies the request. */
  policyDenied: 3,
  /** The API answered with an error (4xx/5xx). */
  apiRefused: 4,
  /** `lease revoke --wait`: everything finished, but some leases ended irrevocable. */
  irrevocable: 5,
  /** `audit verify`, `task show`, `record verify`: something does not verify. */
  verificationFailed: 6,
  /**
   * `lease revoke --wait`: `--timeout` passed with leases still being revoked. `approvals wait`, `exec`,
   * `credential-process`: the wait for a step-up approval timed out with the request still pending.
   */
  timedOut: 7,
  /** `approvals wait`, `exec`, `credential-process`: the step-up approval was denied or expired. */
  approvalRefused: 8,
} as const;

/** An ending the CLI knows the exit code of: `main` prints the message and exits with `exitCode`. */
export class ExitError extends Error {
  constructor(
    message: string,
    readonly exitCode: number,
  ) {
    super(message);
  }
}
