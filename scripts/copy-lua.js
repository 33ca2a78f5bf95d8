// The Lua scripts are read at run time from beside the compiled code (src/redis/scripts.ts): tsc does not
// copy them, so the build does. Stale copies of deleted scripts are removed, so dist/ holds what src/ has.
const { cpSync, rmSync } = require('node:fs');
const path = require('node:path');

const from = path.join(__dirname, '..', 'src', 'redis', 'scripts');
const to = path.join(__dirname, '..', 'dist', 'redis', 'scripts');
rmSync(to, { recursive: true, force: true });
cpSync(from, to, { recursive: true });
