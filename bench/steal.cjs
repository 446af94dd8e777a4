// Callers that use the official Node SDK (@hubspot/api-client) for SECONDS seconds with
// CONCURRENCY loops of contacts getPage against BASE (hubgate, nginx or the simulator);
// shared by bench/steal.sh and bench/saturation.sh. MODE "sdk-presets" gives the SDK its
// own limiter preset and 6 retries; any other mode (hubgate, nginx, sdk-plain) is a plain
// SDK without limiter or retries, and names the row. Prints one JSON line.
const hubspot = require('@hubspot/api-client');
const { DEFAULT_LIMITER_OPTIONS } = require('@hubspot/api-client/lib/src/configuration/constants');

const mode = process.env.MODE;
const options = { accessToken: process.env.TOKEN, basePath: process.env.BASE };
if (mode === 'sdk-presets') {
  options.limiterOptions = DEFAULT_LIMITER_OPTIONS;
  options.numberOfApiCallRetries = 6;
}
const client = new hubspot.Client(options);
const stopAt = Date.now() + Number(process.env.SECONDS) * 1000;
let ok = 0;
const answeredAt = [];
const errors = {};

async function loop() {
  while (Date.now() < stopAt) {
    try {
      await client.crm.contacts.basicApi.getPage(1);
      ok += 1;
      answeredAt.push(Date.now());
    } catch (e) {
      const code = String(e.code || e.message);
      errors[code] = (errors[code] || 0) + 1;
    }
  }
}

Promise.all(Array.from({ length: Number(process.env.CONCURRENCY) }, loop)).then(() => {
  // Answers within whole windows from the first one: what the pacing achieved while the
  // callers still wanted more (calls queued at the end are answered later).
  const first = Math.min(...answeredAt);
  const windows = Math.floor(Number(process.env.SECONDS) / 10);
  const inSpan = answeredAt.filter((t) => t < first + windows * 10000).length;
  console.log(JSON.stringify({ mode, ok, errors, inSpan, windows }));
});
