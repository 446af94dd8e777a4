// The official Node SDK (@hubspot/api-client) making brokered calls through hubgate: no
// access token at all, the install named by X-Hubgate-Portal; hubgate sends the token.
// Run by scripts/sdk-test.sh with HUBGATE_URL and HUBGATE_PORTAL (an imported install).
const hubspot = require('@hubspot/api-client');
const assert = require('node:assert/strict');

async function main() {
  const client = new hubspot.Client({
    basePath: process.env.HUBGATE_URL,
    defaultHeaders: { 'X-Hubgate-Portal': process.env.HUBGATE_PORTAL },
  });
  const contacts = client.crm.contacts.basicApi;
  const created = await contacts.create({ properties: { email: 'alan@example.com' } });
  const fetched = await contacts.getById(created.id);
  assert.equal(fetched.properties.email, 'alan@example.com', 'the contact round-trips');
  const page = await contacts.getPage(5);
  assert.ok(page.results.length > 0, 'the page has contacts');
  console.log('node brokered: 3 calls with no token, all answered');
}

main().catch((e) => {
  console.error('node brokered: FAILED:', e.message || e);
  process.exit(1);
});
