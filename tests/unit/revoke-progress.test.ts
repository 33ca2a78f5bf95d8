import { createProgressLine } from '../../src/cli/progress-line';
import { describeOutcome, describeProgress } from '../../src/cli/wait-for-revocation';
import type { RevocationProgress } from '../../src/usecases/follow-revocation';

const progress = (values: Partial<RevocationProgress>): RevocationProgress => ({
  revocationId: 'r',
  total: 10_000,
  settled: 7412,
  irrevocable: 3,
  pending: 2585,
  retrying: 0,
  byState: { revoked: 7400, expired: 12, irrevocable: 3, revoking: 2585 },
  irrevocableLeaseIds: [],
  ...values,
});

/** A stream that records what was written, and a clock the test moves. */
function recorder(isTTY: boolean) {
  const writes: string[] = [];
  let nowMs = 0;
  const line = createProgressLine(
    { isTTY, write: (text: string) => writes.push(text) },
    { nowMs: () => nowMs },
  );
  return { writes, line, advance: (ms: number) => (nowMs += ms) };
}

describe('lease revoke --wait progress', () => {
  it('describes progress with thousands separators, and retries only when there are some', () => {
    expect(describeProgress(progress({}))).toBe('revoking: 7,412 of 10,000 settled, 3 irrevocable');
    expect(describeProgress(progress({ retrying: 20 }))).toBe(
      'revoking: 7,412 of 10,000 settled, 3 irrevocable, 20 retrying',
    );
    expect(describeOutcome(progress({}))).toBe(
      'settled 7,412 of 10,000 (revoked 7,400, revoking 2,585, expired 12, irrevocable 3)',
    );
    expect(describeOutcome(progress({ total: 0, settled: 0, byState: {} }))).toBe('settled 0 of 0');
  });

  it('on a terminal, rewrites one line in place on every update and ends it when done', () => {
    const { writes, line } = recorder(true);
    line.update('revoking: 1 of 3 settled, 0 irrevocable');
    line.update('revoking: 2 of 3 settled, 0 irrevocable');
    line.done('revoking: 3 of 3 settled, 0 irrevocable');
    expect(writes).toEqual([
      '\rrevoking: 1 of 3 settled, 0 irrevocable\x1b[K',
      '\rrevoking: 2 of 3 settled, 0 irrevocable\x1b[K',
      '\rrevoking: 3 of 3 settled, 0 irrevocable\x1b[K\n',
    ]);
  });

  it('elsewhere, writes plain lines at most every 2 s, and always the last one', () => {
    const { writes, line, advance } = recorder(false);
    line.update('a');
    advance(1999);
    line.update('b');
    advance(1);
    line.update('c');
    advance(500);
    line.update('d');
    line.done('e');
    expect(writes).toEqual(['a\n', 'c\n', 'e\n']);
  });
});
