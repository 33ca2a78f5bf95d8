export default async function globalTeardown(): Promise<void> {
  const redis = (globalThis as Record<string, unknown>).__taskleaseRedis as
    { stop(): Promise<void> } | undefined;
  await redis?.stop();
}
