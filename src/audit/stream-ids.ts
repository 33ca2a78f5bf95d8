/** Redis stream ids `<ms>-<seq>` in order; anything else sorts first (it is reported, not trusted). */
export function compareStreamIds(a: string, b: string): number {
  const parse = (id: string): [bigint, bigint] => {
    const match = /^(\d{1,20})-(\d{1,20})$/.exec(id);
    return match ? [BigInt(match[1] as string), BigInt(match[2] as string)] : [-1n, -1n];
  };
  const [aMs, aSeq] = parse(a);
  const [bMs, bSeq] = parse(b);
  if (aMs !== bMs) return aMs < bMs ? -1 : 1;
  return aSeq === bSeq ? 0 : aSeq < bSeq ? -1 : 1;
}
