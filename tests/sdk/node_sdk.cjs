// The official Node SDK (@hubspot/api-client) used unchanged through hubgate.
// Only `basePath` differs from a production integration. Run by scripts/sdk-test.sh with
// HUBGATE_URL (hubgate's base URL) and HUBSPOT_TOKEN (a simulator token).
const hubspot = require('@hubspot/api-client');
const assert = require('node:assert/strict');

async function main() {
  const client = new hubspot.Client({
    accessToken: process.env.HUBSPOT_TOKEN,
    basePath: process.env.HUBGATE_URL,
  });
  const contacts = client.crm.contacts;
  let checks = 0;
  const check = (condition, what) => {
    assert.ok(condition, what);
    checks += 1;
  };

  const created = await contacts.basicApi.create({
    properties: { email: 'grace@example.com', firstname: 'Grace' },
    associations: [],
  });
  check(created.id && created.properties.email === 'grace@example.com', 'create');
  check(created.createdAt instanceof Date, 'dates deserialize');

  const fetched = await contacts.basicApi.getById(created.id, ['email', 'firstname']);
  check(fetched.id === created.id && fetched.properties.firstname === 'Grace', 'get by id');

  const updated = await contacts.basicApi.update(created.id, { properties: { lastname: 'Hopper' } });
  check(updated.properties.lastname === 'Hopper', 'update');

  const found = await contacts.searchApi.doSearch({
    filterGroups: [{ filters: [{ propertyName: 'email', operator: 'EQ', value: 'grace@example.com' }] }],
    properties: ['email'],
    limit: 10,
    after: '0',
    sorts: [],
  });
  check(found.total >= 1 && found.results[0].properties.email === 'grace@example.com', 'search');

  const batch = await contacts.batchApi.create({
    inputs: [0, 1, 2].map((i) => ({ properties: { email: `n${i}@example.com` }, associations: [] })),
  });
  check(batch.status === 'COMPLETE' && batch.results.length === 3, 'batch create');

  const read = await contacts.batchApi.read({
    inputs: batch.results.map((c) => ({ id: c.id })),
    properties: ['email'],
    propertiesWithHistory: [],
  });
  check(read.results.length === 3, 'batch read');

  const all = await contacts.getAll();
  check(all.length >= 4, `getAll pages through every contact (got ${all.length})`);

  await contacts.basicApi.archive(created.id);
  try {
    await contacts.basicApi.getById(created.id);
    check(false, 'archived contact is gone');
  } catch (e) {
    check(e.code === 404, `404 after archive (got ${e.code})`);
  }

  const bad = new hubspot.Client({ accessToken: 'pat-na1-not-a-real-token', basePath: process.env.HUBGATE_URL });
  try {
    await bad.crm.contacts.basicApi.getPage(1);
    check(false, 'an invalid token is refused');
  } catch (e) {
    check(e.code === 401, `HubSpot's 401 passes through (got ${e.code})`);
  }
  console.log(`node sdk: ${checks} checks passed`);
}

main().catch((e) => {
  console.error('node sdk: FAILED:', e && e.stack ? e.stack : e);
  process.exit(1);
});
