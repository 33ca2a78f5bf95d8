import type { Cluster, Redis } from 'ioredis';

/** One server or a Sentinel-discovered primary (a `Redis`), or a Redis Cluster: the same commands on each. */
export type RedisClient = Redis | Cluster;
