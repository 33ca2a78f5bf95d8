import { buildSeal, GENESIS_CHAIN, nextChain, eventDigest, signSeal } from '../../src/audit/audit-chain';
import type { RawAuditEntry, StoredSeal } from '../../src/audit/audit-log';
import { verifyAudit, type VerifyAuditInput } from '../../src/audit/verify-audit';
import { generateSigningJwks, loadSigningKeys, type SigningKeyRing } from '../../src/signing/signing-keys';

/** Seals built and signed as the sealer does, then the log altered in each way a tamperer could. */
describe('verifyAudit', () => {
  // Ids spaced out, so an event can be inserted between two sealed ones.
  const entries: RawAuditEntry[] = Array.from({ length: 9 }, (_, i) => ({
    id: `1700000000000-${i * 10}`,
    json: JSON.stringify({ type: 'credential.issued', atMs: 1700000000000 + i, task: i < 5 ? 'a' : 'b' }),
  }));
  let keys: SigningKeyRing;
  let seals: StoredSeal[];
  const sealAll = async (log: string, ring: SigningKeyRing) => {
    const out: StoredSeal[] = [];
    let previous = { lastSeq: 0, hash: GENESIS_CHAIN };
    for (const batch of [entries.slice(0, 4), entries.slice(4, 6), entries.slice(6, 9)]) {
      const seal = buildSeal(log, previous, batch, 1700000001000);
      out.push({ id: seal.lastId, jws: await signSeal(ring, 'tasklease', seal) });
      previous = seal;
    }
    return out;
  };

  beforeAll(async () => {
    keys = await loadSigningKeys(JSON.stringify(await generateSigningJwks()));
    seals = await sealAll('tl:', keys);
  });

  const verify = (input: Partial<VerifyAuditInput>) =>
    verifyAudit({ entries, seals, jwks: keys.jwks, mode: 'full', ...input });
  const kinds = async (input: Partial<VerifyAuditInput>) =>
    (await verify(input)).problems.map((problem) => problem.kind);
  const withJson = (index: number, json: string) =>
    entries.map((entry, i) => (i === index ? { ...entry, json } : entry));

  it('passes an untouched log and reports its head', async () => {
    const result = await verify({});
    expect(result).toMatchObject({ ok: true, verifiedEvents: 9, seals: 3, unsealed: 0 });
    expect(result.head).toMatchObject({ seq: 9, id: '1700000000000-80' });
  });

  const cases: [string, () => Partial<VerifyAuditInput>, string[]][] = [
    ['an edited event', () => ({ entries: withJson(2, '{"type":"credential.denied"}') }), ['changed']],
    ['a removed event', () => ({ entries: entries.filter((_, i) => i !== 5) }), ['removed']],
    [
      'an event inserted between sealed ones',
      () => ({
        entries: [...entries.slice(0, 3), { id: '1700000000000-25', json: '{}' }, ...entries.slice(3)],
      }),
      ['changed'],
    ],
    [
      'swapped contents',
      () => ({
        entries: withJson(1, entries[2]!.json).map((e, i) =>
          i === 2 ? { ...e, json: entries[1]!.json } : e,
        ),
      }),
      ['reordered'],
    ],
    [
      'swapped lines',
      () => ({ entries: [entries[0]!, entries[2]!, entries[1]!, ...entries.slice(3)] }),
      ['reordered'],
    ],
    [
      'every event of the newest seal removed (tail cut, seal kept)',
      () => ({ entries: entries.slice(0, 6) }),
      ['removed'],
    ],
    ['a removed first seal', () => ({ seals: seals.slice(1) }), ['truncated-start', 'changed']],
    ['a removed middle seal', () => ({ seals: [seals[0]!, seals[2]!] }), ['seal-gap', 'changed']],
    [
      'a seal stored under another id',
      () => ({ seals: [{ ...seals[0]!, id: '1700000000000-50' }, ...seals.slice(1)] }),
      ['bad-seal'],
    ],
    ['events with no seal at all, in a file', () => ({ seals: [], unsealed: 'fail' }), ['unsealed']],
  ];
  it.each(cases)('fails on %s', async (_name, input, expected) => {
    const found = await kinds(input());
    for (const kind of expected) expect(found).toContain(kind);
  });

  it('refuses a seal signed by another key, and a seal of another log signed by the same key', async () => {
    const other = await loadSigningKeys(JSON.stringify(await generateSigningJwks()));
    expect(await kinds({ seals: [(await sealAll('tl:', other))[0]!, ...seals.slice(1)] })).toContain(
      'bad-seal',
    );
    const staging = await sealAll('staging:', keys);
    expect(await kinds({ seals: [staging[0]!, ...seals.slice(1)] })).toContain('bad-seal');
  });

  it('tolerates events younger than the grace on a live log, not older ones', async () => {
    const recent = { id: `${Date.now()}-0`, json: '{"type":"task.completed"}' };
    const rule = { nowMs: Date.now(), graceMs: 30_000 };
    expect(await verify({ entries: [...entries, recent], unsealed: rule })).toMatchObject({
      ok: true,
      unsealed: 1,
    });
    const old = { id: `${Date.now() - 60_000}-0`, json: '{"type":"task.completed"}' };
    expect(await kinds({ entries: [...entries, old], unsealed: rule })).toEqual(['unsealed']);
  });

  it('checks that the chain still passes through a head noted earlier', async () => {
    let hash = GENESIS_CHAIN;
    for (const entry of entries.slice(0, 5)) hash = nextChain(hash, eventDigest(entry.id, entry.json));
    expect(await verify({ expectHead: { seq: 5, hash } })).toMatchObject({ ok: true });
    expect(await kinds({ expectHead: { seq: 5, hash: GENESIS_CHAIN } })).toEqual(['truncated-end']);
    // The newest events cut off with their seal: the noted head is gone.
    let head9 = GENESIS_CHAIN;
    for (const entry of entries) head9 = nextChain(head9, eventDigest(entry.id, entry.json));
    const cut = {
      entries: entries.slice(0, 6),
      seals: seals.slice(0, 2),
      expectHead: { seq: 9, hash: head9 },
    };
    expect(await kinds(cut)).toEqual(['truncated-end']);
  });

  it('checks an export of some events one by one, and that each belongs to it', async () => {
    const taskB = entries.slice(5);
    const exported = { entries: taskB, mode: 'partial' as const, filter: { task: 'b' } };
    expect(await verify(exported)).toMatchObject({ ok: true, verifiedEvents: 4 });
    expect(await kinds({ ...exported, entries: [{ ...taskB[0]!, json: '{"task":"b"}' }] })).toEqual([
      'changed',
    ]);
    // A genuine sealed event of task a passed off as task b's.
    expect(await kinds({ ...exported, entries: [entries[0]!, ...taskB] })).toEqual(['foreign']);
    expect(await kinds({ ...exported, seals: seals.slice(0, 2) })).toEqual(['unsealed']);
  });
});
