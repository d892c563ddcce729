// The hook sidecar of `softprobe suite run`: loads the --hooks files, then answers the
// reference's NDJSON protocol. One request per stdin line, {"id","hook","kind","payload"};
// one reply per stdout line, {"id","result"} or {"id","error"}. Started as
//   node sidecar.mjs <hook files…>
// and written by softprobe to a temporary directory; it exits when stdin closes.

import { createRequire } from 'node:module';
import { resolve, extname } from 'node:path';
import { createInterface } from 'node:readline';
import { pathToFileURL } from 'node:url';

// stdout belongs to the protocol. Anything a hook writes there (console.log, or
// process.stdout.write itself) goes to stderr, which softprobe relays as `sidecar: …` lines.
const reply = process.stdout.write.bind(process.stdout);
const send = (message) => reply(JSON.stringify(message) + '\n');
process.stdout.write = process.stderr.write.bind(process.stderr);

const messageOf = (err) => (err instanceof Error ? err.message : String(err));

/** Imports one hook file: as ESM, else (`.js`, `.cjs`) as CommonJS. */
async function load(file) {
  const path = resolve(file);
  try {
    return await import(pathToFileURL(path).href);
  } catch (esmError) {
    if (!['.js', '.cjs'].includes(extname(path))) throw esmError;
    try {
      return createRequire(path)(path);
    } catch {
      throw esmError;
    }
  }
}

/** The functions a module exports, by export name; a default object's functions too. */
function exported(module) {
  const functions = new Map();
  const add = (name, value) => {
    if (typeof value === 'function' && !functions.has(name)) functions.set(name, value);
  };
  for (const [name, value] of Object.entries(module)) {
    if (name !== 'default') add(name, value);
  }
  const fallback = module.default;
  if (fallback && typeof fallback === 'object') {
    for (const [name, value] of Object.entries(fallback)) add(name, value);
  } else if (typeof fallback === 'function' && !functions.size) {
    // `module.exports = function name() {}`: its own name.
    add(fallback.name || 'default', fallback);
  }
  return functions;
}

const hooks = new Map(); // name -> {fn, file}

async function start(files) {
  for (const file of files) {
    let module;
    try {
      module = await load(file);
    } catch (err) {
      // A syntax error's stack is node's own frames; `node --check` shows the line instead.
      if (err instanceof SyntaxError) {
        throw new Error(`cannot load hook file ${file}: ${err.message} (node --check ${file} shows where)`);
      }
      if (err instanceof Error && err.stack) console.error(err.stack);
      throw new Error(`cannot load hook file ${file}: ${messageOf(err)}`);
    }
    for (const [name, fn] of exported(module)) {
      const seen = hooks.get(name);
      if (seen && seen.file !== file) {
        throw new Error(`hook ${JSON.stringify(name)} is exported by both ${seen.file} and ${file}`);
      }
      hooks.set(name, { fn, file });
    }
  }
}

async function answer(line) {
  let request;
  try {
    request = JSON.parse(line);
  } catch (err) {
    console.error(`ignored a request that is not JSON: ${messageOf(err)}`);
    return;
  }
  const { id, hook, payload } = request;
  const entry = hooks.get(hook);
  if (!entry) {
    send({ id, error: `hook ${JSON.stringify(hook)} is not exported by any hook file` });
    return;
  }
  try {
    const result = await entry.fn(payload);
    // Serialised here so that a result JSON cannot carry (a cycle, a BigInt) is an error reply.
    const line = JSON.stringify({ id, result: result === undefined ? null : result });
    reply(line + '\n');
  } catch (err) {
    if (err instanceof Error && err.stack) console.error(err.stack);
    send({ id, error: messageOf(err) });
  }
}

let failure;
try {
  await start(process.argv.slice(2));
} catch (err) {
  failure = messageOf(err);
}
if (failure === undefined) {
  send({ ready: true, hooks: [...hooks.keys()] });
  serve();
} else {
  // Nothing reads stdin yet, so node exits once this line is written.
  send({ ready: true, error: failure });
  process.exitCode = 1;
}

function serve() {
  const pending = new Set();
  const input = createInterface({ input: process.stdin, crlfDelay: Infinity });
  input.on('line', (line) => {
    if (!line.trim()) return;
    const call = answer(line).finally(() => pending.delete(call));
    pending.add(call);
  });
  input.on('close', async () => {
    await Promise.allSettled([...pending]);
    process.exit(0);
  });
}
