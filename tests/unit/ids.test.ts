import { newId, newLeaseId } from '../../src/domain/ids';

describe('ids', () => {
  it('lease ids are 22 letters and digits, never repeated, and spread over the whole alphabet', () => {
    const ids = Array.from({ length: 20_000 }, newLeaseId);
    for (const id of ids) expect(id).toMatch(/^[0-9A-Za-z]{22}$/);
    expect(new Set(ids).size).toBe(ids.length);
    // Every character is drawn equally often. A plain `byte % 62` would favour the first eight ('0'–'7': 5/256
    // each instead of 4/256), 15.6 % of all characters against 12.9 %; 440,000 characters put that 12 standard
    // deviations apart.
    const chars = ids.join('');
    const firstEight = [...chars].filter((char) => char >= '0' && char <= '7').length / chars.length;
    expect(firstEight).toBeGreaterThan(8 / 62 - 0.005);
    expect(firstEight).toBeLessThan(8 / 62 + 0.005);
    expect(new Set(chars).size).toBe(62);
  });

  it('other ids stay 32 hex characters', () => {
    expect(newId()).toMatch(/^[0-9a-f]{32}$/);
  });
});
