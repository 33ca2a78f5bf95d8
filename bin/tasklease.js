#!/usr/bin/env node
'use strict';
// Cedar's WASM build crashes V8 ("unreachable code" in the deoptimizer) under load on Node 20 and 22.
const major = Number(process.versions.node.split('.')[0]);
if (major < 24) {
  process.stderr.write(
    `tasklease needs Node 24 or newer (this is ${process.version}): Cedar's WASM crashes older V8 under load.\n` +
      'Run it through npx or an npm script, which put the node@24 devDependency first on the PATH.\n',
  );
  process.exit(1);
}
require('../dist/cli/main.js').main(process.argv);
