// The Node `mjml` compiler kept running, for benchmarks/render_speed.py: one JSON request per line on stdin,
// one JSON answer per line on stdout.
//
//   {"op": "compile", "id": 7, "mjml": "<mjml>…</mjml>"}          → {"id": 7, "html_bytes": 18211, "errors": 0}
//   {"op": "bench", "mjml": "<mjml>…</mjml>", "iterations": 200, "warmup": 100}
//                                                                 → {"iterations": 200, "seconds": 1.93}
//
// "bench" compiles the same source in a loop inside Node (no pipe in between); "compile" is what a Python
// process pays per email when it hands each one to a Node renderer.
"use strict";

const readline = require("readline");
const mjml2html = require("mjml");

// As close as Node mjml gets to how the engine calls mjml-python: no web fonts, comments dropped.
const OPTIONS = { fonts: {}, keepComments: false, validationLevel: "soft", minify: false };

function compile(source) {
  const result = mjml2html(source, OPTIONS);
  return { html_bytes: Buffer.byteLength(result.html, "utf8"), errors: result.errors.length };
}

function answer(request) {
  if (request.op === "compile") {
    return { id: request.id, ...compile(request.mjml) };
  }
  if (request.op === "bench") {
    for (let n = 0; n < (request.warmup || 1); n += 1) {
      compile(request.mjml); // let the JIT settle before the clock starts
    }
    const started = process.hrtime.bigint();
    for (let n = 0; n < request.iterations; n += 1) {
      compile(request.mjml);
    }
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    return { iterations: request.iterations, seconds };
  }
  return { error: `unknown op ${JSON.stringify(request.op)}` };
}

const lines = readline.createInterface({ input: process.stdin });
lines.on("line", (line) => {
  let reply;
  try {
    reply = answer(JSON.parse(line));
  } catch (error) {
    reply = { error: String(error) };
  }
  process.stdout.write(JSON.stringify(reply) + "\n");
});
process.stdout.write(JSON.stringify({ ready: true, mjml: require("mjml/package.json").version }) + "\n");
