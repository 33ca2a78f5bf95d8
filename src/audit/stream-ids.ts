const STREAM_ID = /^(\d{1,20})-(\d{1,20})$/;

/**
 * A Redis stream id `<ms>-<seq>` as a string that sorts like the id (both parts zero-padded); anything that
 * is not a stream id sorts first (it is reported, never trusted). Compute it once per id: verifying a large
 * log compares ids millions of times.
 */
export function streamIdKey(id: string): string {
  const match = STREAM_ID.exec(id);
  return match ? `${(match[1] as string).padStart(20, '0')}-${(match[2] as string).padStart(20, '0')}` : '';
}

export function compareStreamIds(a: string, b: string): number {
  const [keyA, keyB] = [streamIdKey(a), streamIdKey(b)];
  return keyA < keyB ? -1 : keyA > keyB ? 1 : 0;
}
