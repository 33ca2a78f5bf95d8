import { newId, newLeaseId } from '../../src/domain/ids';

describe('ids', () => {
  it('lease ids are 22 letters and digits, never repeated, and spread over the whole alphabet', () => {
    const ids = Array.from({ length: 20_000 }, newLeaseId);
    for (const id of ids) expect(id).toMatch(/^[0-9A-Za-z]{22}$/);
    expect(new Set(ids).size).toBe(ids.length);
    // Every character of the alphabet turns up in the later positions (the first carries fewer bits).
    const seen = new Set(ids.flatMap((id) => [...id.slice(1)]));
    expect(seen.size).toBe(62);
  });

  it('other ids stay 32 hex characters', () => {
    expect(newId()).toMatch(/^[0-9a-f]{32}$/);
  });
});
