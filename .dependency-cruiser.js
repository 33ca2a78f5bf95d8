/**
 * The house has six floors and imports only go down (docs/architecture.md):
 *   entry points (wiring, cli) → transport (http, jobs) → use cases → capabilities → storage (redis)
 *   → ground (domain, config)
 * and nothing anywhere imports in a cycle. CI runs this through `npm run lint`.
 */
const ground = '^src/(domain|config)/';
const storage = '^src/redis/';
const capability =
  '^src/(identity|policy|signing|providers|leases|tasks|audit|observability|approvals|entitlements)/';
const usecase = '^src/usecases/';
const transport = '^src/(http|jobs)/';
const entry = '^src/(wiring|cli)/';

const below = (name, from, to) => ({ name, severity: 'error', from: { path: from }, to: { path: to } });

module.exports = {
  forbidden: [
    { name: 'no-circular', severity: 'error', from: {}, to: { circular: true } },
    below('ground-imports-nothing-above', ground, [storage, capability, usecase, transport, entry].join('|')),
    below('storage-imports-only-ground', storage, [capability, usecase, transport, entry].join('|')),
    below('capabilities-import-no-use-case-or-above', capability, [usecase, transport, entry].join('|')),
    below('use-cases-import-no-transport-or-entry', usecase, [transport, entry].join('|')),
    below('transport-imports-no-entry-point', transport, entry),
    below('src-never-imports-tests', '^src/', '^(tests|scripts)/'),
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsConfig: { fileName: 'tsconfig.json' },
    tsPreCompilationDeps: true,
  },
};
