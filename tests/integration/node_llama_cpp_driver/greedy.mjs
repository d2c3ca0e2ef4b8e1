// Greedy decoding of a GGUF file with llama.cpp, through node-llama-cpp's prebuilt CPU binary.
//
// Usage: node greedy.mjs ENTRY MODEL.gguf MAX_NEW < request.json
//   ENTRY: path to node-llama-cpp's dist/index.js (the test resolves it; no global install).
//   request.json: {"prompt": "...", "prompts": ["...", ...], "stop": [ids], "texts": ["...", ...]}
//   ("prompt", "prompts" and "texts" are each optional; one model load serves them all).
// Prints one JSON line: {"runs": [{"prompt_ids", "generated", "confidence"}, ...] (one per prompt,
// "prompt" first), "texts_ids": [[...], ...]} plus the first run's fields at the top level, where
// prompt_ids / texts_ids are llama.cpp's tokenisations (special tokens parsed, no BOS added),
// generated the greedy continuation of the prompt (an end-of-generation token included) and
// confidence the probability llama.cpp gave each greedy token.
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

const [entry, modelPath, maxNewArg] = process.argv.slice(2);
const request = JSON.parse(readFileSync(0, "utf8"));
const { getLlama, LlamaLogLevel } = await import(pathToFileURL(entry).href);

const llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error, maxThreads: 1 });
const model = await llama.loadModel({ modelPath });
const context = await model.createContext({ contextSize: 256, threads: 1 });
const sequence = context.getSequence();

const prompts = [...(request.prompt !== undefined ? [request.prompt] : []), ...(request.prompts ?? [])];
const textsIds = (request.texts ?? []).map((text) => Array.from(model.tokenize(text, true)));
const stop = new Set(request.stop ?? []);
const runs = [];
for (const prompt of prompts) {
  await sequence.clearHistory(); // each prompt starts from an empty context
  const promptIds = Array.from(model.tokenize(prompt, true));
  const generated = [];
  const confidence = [];
  for await (const out of sequence.evaluateWithMetadata(promptIds, { confidence: true }, { temperature: 0, yieldEogToken: true })) {
    generated.push(out.token);
    confidence.push(out.confidence);
    if (generated.length >= Number(maxNewArg) || stop.has(out.token)) break;
  }
  runs.push({ prompt_ids: promptIds, generated, confidence });
}
process.stdout.write(JSON.stringify({ ...(runs[0] ?? {}), runs, texts_ids: textsIds }) + "\n");
await context.dispose();
await model.dispose();
await llama.dispose();
