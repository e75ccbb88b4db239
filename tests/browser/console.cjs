// The web console in a real browser (headless Chromium driven by Playwright), against a
// running shop: run through scripts/console-test, which starts the shop (SHOP_URL, on its
// own database SHOP_DATABASE_URL) and sets CHROMIUM and ARTIFACTS.
'use strict';

const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const path = require('node:path');
const { chromium } = require('playwright-core');

const base = process.env.SHOP_URL;
const artifacts = process.env.ARTIFACTS;

async function json(route, init) {
  const response = await fetch(base + route, init);
  assert.ok(response.ok, `${route}: ${response.status}`);
  return response.json();
}

async function eventually(what, check, ms = 30_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

// The figures of the projections' table, by projection.
function tableOf(page) {
  return page.$$eval('#projections tbody tr', (rows) =>
    Object.fromEntries(rows.map((row) => [
      row.dataset.projection,
      Object.fromEntries([...row.querySelectorAll('[data-field]')].map((cell) => [cell.dataset.field, cell.textContent])),
    ])));
}

const FIGURES = ['state', 'generation', 'checkpoint', 'head', 'lag_events', 'lease_holder'];

// The page shows what GET /status answered: the table and the answer it was filled from
// (kept by the page), read together, after a refresh of the page's own.
async function checkTableAgainstApi(page) {
  const refreshed = Number(await page.evaluate(() => document.body.dataset.refreshed || 0));
  await page.waitForFunction((n) => Number(document.body.dataset.refreshed || 0) > n, refreshed);
  const { status, rows } = await page.evaluate(() => ({
    status: window.lastStatus,
    rows: Object.fromEntries([...document.querySelectorAll('#projections tbody tr')].map((row) => [
      row.dataset.projection,
      Object.fromEntries([...row.querySelectorAll('[data-field]')].map((cell) => [cell.dataset.field, cell.textContent])),
    ])),
  }));
  assert.deepEqual(Object.keys(rows).sort(), status.map((s) => s.name).sort());
  for (const s of status) {
    for (const field of FIGURES) {
      assert.equal(rows[s.name][field], String(s[field] ?? ''), `${s.name}.${field}`);
    }
  }
  // And the answer is the API's: the same projections, generations and heads as a request
  // of the test's own.
  const api = await json('/status');
  assert.deepEqual(api.map((s) => [s.name, s.generation]), status.map((s) => [s.name, s.generation]));
}

async function main() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const page = await browser.newPage({ viewport: { width: 1500, height: 1000 } });
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(e.message));
  page.on('console', (m) => { if (m.type() === 'error') pageErrors.push(m.text()); });
  try {
    await eventually('the projections to catch up', async () => {
      const status = await json('/status');
      return status.length >= 4 && status.every((s) => s.lag_events === 0 && s.state === 'running');
    });

    // The overview: every projection with the figures of the API, kept live.
    await page.goto(base + '/console');
    await checkTableAgainstApi(page);
    const headBefore = (await tableOf(page)).order_summaries.head;
    const placed = await json('/orders', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        customer_id: '0b7e4a52-3f1d-4c9a-8e27-5d6c7b8a9f01',
        lines: [{ sku: 'TEE', quantity: 2 }],
        card: 'card_approve',
      }),
    });
    await page.waitForFunction((head) =>
      document.querySelector('tr[data-projection="order_summaries"] [data-field="head"]').textContent !== head, headBefore);
    await checkTableAgainstApi(page);
    await page.screenshot({ path: path.join(artifacts, 'console.png'), fullPage: true });

    // Pause and resume from the page.
    await Promise.all([
      page.waitForURL(base + '/console'),
      page.click('tr[data-projection="customer_orders"] button:text("pause")'),
    ]);
    await page.waitForSelector('tr[data-projection="customer_orders"] [data-field="state"]:text("paused")');
    assert.equal((await json('/status')).find((s) => s.name === 'customer_orders').state, 'paused');
    await Promise.all([
      page.waitForURL(base + '/console'),
      page.click('tr[data-projection="customer_orders"] button:text("resume")'),
    ]);
    await eventually('customer_orders to run again', async () =>
      (await json('/status')).find((s) => s.name === 'customer_orders').state === 'running');

    // A form of another site cannot pause a projection in the operator's name.
    const forged = await fetch(base + '/console/projections/order_summaries/pause', {
      method: 'POST', headers: { 'sec-fetch-site': 'cross-site' },
    });
    assert.equal(forged.status, 403);
    assert.equal((await json('/status')).find((s) => s.name === 'order_summaries').state, 'running');

    // A dead letter: an event product_stock cannot decode stops it; skipped from the page.
    assert.equal(await page.locator('#no-letters').count(), 1);
    const poison = execFileSync('psql', ['-qtA', process.env.SHOP_DATABASE_URL, '-c',
      "SELECT ids[1] FROM (SELECT ARRAY[gen_random_uuid()] AS ids) i, " +
      "LATERAL es_append_v2('inventory-POISON', 0, 0, i.ids, ARRAY['ProductRegistered'], ARRAY[1], " +
      "ARRAY['{\"sku\": 7}'::jsonb], '{}'::jsonb, true, true) a"]).toString().trim().split('\n')[0];
    assert.match(poison, /^[0-9a-f-]{36}$/);
    await eventually('product_stock to stop at it', async () =>
      (await json('/status')).find((s) => s.name === 'product_stock').state === 'failed');
    await page.goto(base + '/console');
    const letter = page.locator('table[data-letters="product_stock"] tr', { hasText: poison });
    assert.equal(await letter.count(), 1);
    assert.match(await letter.textContent(), /inventory-POISON/);
    await page.screenshot({ path: path.join(artifacts, 'console-dead-letter.png'), fullPage: true });
    await letter.locator('button:text("skip")').click();
    await page.waitForSelector('#no-letters');
    await eventually('product_stock to go on past it', async () =>
      (await json('/status')).find((s) => s.name === 'product_stock').state === 'running');

    // The stream browser, from the finder, and a correlation followed across streams.
    const stream = `order-${placed.order_id}`;
    await eventually('the order to be confirmed', async () =>
      (await json(`/orders/${placed.order_id}`)).status === 'confirmed');
    await page.fill('input[name="id"]', stream);
    await page.click('button:text("find stream")');
    await page.waitForSelector('#events');
    assert.equal(await page.textContent('#stream'), stream);
    const types = await page.$$eval('#events .type', (cells) => cells.map((c) => c.textContent));
    assert.equal(types[0], 'OrderPlaced');
    assert.ok(types.includes('OrderConfirmed'), types.join(','));
    await page.screenshot({ path: path.join(artifacts, 'console-stream.png'), fullPage: true });
    await page.click('#events a.correlation >> nth=0');
    await page.waitForSelector('#correlation');
    const streams = await page.$$eval('#events tbody tr td:first-child', (cells) => cells.map((c) => c.textContent));
    const categories = new Set(streams.map((s) => s.split('-')[0]));
    assert.ok(categories.has('order') && categories.size >= 2, [...categories].join(','));

    assert.deepEqual(pageErrors, []);
    console.log(`console: passed (screenshots in ${artifacts})`);
  } catch (error) {
    await page.screenshot({ path: path.join(artifacts, 'console-failure.png'), fullPage: true }).catch(() => {});
    throw error;
  } finally {
    await browser.close();
  }
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
