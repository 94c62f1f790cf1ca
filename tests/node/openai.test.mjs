// openai.test.mjs: dsinfer serve through the official `openai` npm package.
// Needs DSINFER_URL (e.g. http://127.0.0.1:8080) and DSINFER_API_KEY of a
// running server (tests/test_server_node.c starts one). Not a load test.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';

const baseURL = `${process.env.DSINFER_URL}/v1`;
const apiKey = process.env.DSINFER_API_KEY;
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 60_000 });
const messages = [
  { role: 'system', content: 'You are terse.' },
  { role: 'user', content: 'Write a haiku about quantum computing' },
];

test('models.list returns the served model', async () => {
  const list = await client.models.list();
  assert.ok(list.data.length >= 1);
  assert.equal(list.data[0].object, 'model');
  assert.equal(typeof list.data[0].id, 'string');
});

test('chat: stream reassembled equals non-stream at temperature 0, usage adds up', async () => {
  const full = await client.chat.completions.create({ model: 'x', messages, max_tokens: 16, temperature: 0 });
  const choice = full.choices[0];
  assert.equal(full.object, 'chat.completion');
  assert.equal(choice.message.role, 'assistant');
  assert.equal(typeof choice.message.content, 'string');
  assert.ok(['stop', 'length'].includes(choice.finish_reason));
  const u = full.usage;
  assert.ok(u.prompt_tokens > 0);
  assert.ok(u.completion_tokens > 0 && u.completion_tokens <= 16);
  assert.equal(u.total_tokens, u.prompt_tokens + u.completion_tokens);

  const stream = await client.chat.completions.create({
    model: 'x', messages, max_tokens: 16, temperature: 0, stream: true, stream_options: { include_usage: true },
  });
  let text = '';
  let finish = null;
  let usage = null;
  for await (const chunk of stream) {
    assert.equal(chunk.object, 'chat.completion.chunk');
    if (chunk.usage) usage = chunk.usage;
    const c = chunk.choices[0];
    if (!c) continue;
    if (c.delta?.content) text += c.delta.content;
    if (c.finish_reason) finish = c.finish_reason;
  }
  assert.equal(text, choice.message.content);
  assert.equal(finish, choice.finish_reason);
  assert.deepEqual([usage.prompt_tokens, usage.completion_tokens], [u.prompt_tokens, u.completion_tokens]);
});

test('chat: logprobs with top_logprobs', async () => {
  const r = await client.chat.completions.create({
    model: 'x', messages, max_tokens: 4, temperature: 0, logprobs: true, top_logprobs: 2,
  });
  const lp = r.choices[0].logprobs.content;
  assert.equal(lp.length, r.usage.completion_tokens);
  assert.ok(lp[0].logprob <= 0);
  assert.equal(lp[0].top_logprobs.length, 2);
});

test('completions: text prompt, stream and non-stream agree', async () => {
  const full = await client.completions.create({ model: 'x', prompt: 'Once upon a time', max_tokens: 12, temperature: 0 });
  assert.equal(full.object, 'text_completion');
  assert.equal(typeof full.choices[0].text, 'string');
  assert.ok(full.usage.completion_tokens >= 1);
  const stream = await client.completions.create({
    model: 'x', prompt: 'Once upon a time', max_tokens: 12, temperature: 0, stream: true,
  });
  let text = '';
  for await (const chunk of stream) text += chunk.choices[0]?.text ?? '';
  assert.equal(text, full.choices[0].text);
});

test('bad request: an error object with status 400', async () => {
  await assert.rejects(
    client.chat.completions.create({ model: 'x', messages, n: 2 }),
    (e) => e instanceof OpenAI.BadRequestError && e.status === 400 && typeof e.message === 'string' &&
      e.error?.type === 'invalid_request_error',
  );
  await assert.rejects(
    client.chat.completions.create({ model: 'x', messages, max_tokens: 1_000_000 }),
    (e) => e.status === 400 && e.code === 'context_length_exceeded',
  );
});

test('API key enforced', async () => {
  const bad = new OpenAI({ baseURL, apiKey: 'wrong-key', maxRetries: 0 });
  await assert.rejects(
    bad.chat.completions.create({ model: 'x', messages, max_tokens: 2 }),
    (e) => e instanceof OpenAI.AuthenticationError && e.status === 401,
  );
  // listing models stays public
  const list = await bad.models.list();
  assert.ok(list.data.length >= 1);
});
