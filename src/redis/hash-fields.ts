/** A record as `HSET` arguments (field, value, ...): absent members are left out, every value a string. */
export const hashFields = (record: object): string[] =>
  Object.entries(record).flatMap(([key, value]) =>
    value === undefined || value === null ? [] : [key, String(value)],
  );
