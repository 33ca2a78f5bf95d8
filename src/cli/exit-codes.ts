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
  /** `lease revoke --wait`: `--timeout` passed with leases still being revoked. */
  timedOut: 7,
} as const;
