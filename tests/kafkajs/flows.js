// kafkajs flows against a Sluice Kafka listener, run by tests/kafka_js.rs. Each flow
// prints one JSON line with what it saw and exits 0, or prints why it failed on stderr
// and exits 1. Every wait has a deadline.
//
//   codecs BOOTSTRAP TOPIC N        an idempotent producer writes N records with keys,
//                                   headers and timestamps per codec (none, gzip, snappy)
//   group BOOTSTRAP TOPIC GROUP N   two members split TOPIC and its N records; a third
//                                   joins (three shares); two leave, the last owns all
//   admin BOOTSTRAP TOPIC GROUP     the admin client: create, metadata, configs, grow,
//                                   groups, offsets, delete
'use strict';
const { Kafka, CompressionTypes, CompressionCodecs, logLevel } = require('kafkajs');
CompressionCodecs[CompressionTypes.Snappy] = require('kafkajs-snappy');

const [flow, bootstrap, ...args] = process.argv.slice(2);
const kafka = new Kafka({ clientId: 'kafkajs-flows', brokers: [bootstrap], logLevel: logLevel.NOTHING });

async function until(what, seconds, cond) {
  const end = Date.now() + seconds * 1000;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`${what}: not within ${seconds} s`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function codecs(topic, n) {
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  const kinds = [['none', CompressionTypes.None], ['gzip', CompressionTypes.GZIP], ['snappy', CompressionTypes.Snappy]];
  let sent = 0;
  for (const [name, compression] of kinds) {
    const messages = [];
    for (let i = 0; i < n; i++) {
      messages.push({
        key: `${name}-k${i}`,
        value: `${name}-v${i}`,
        partition: 0,
        timestamp: String(1700000000000 + i),
        headers: { codec: name, i: String(i) },
      });
    }
    const acks = await producer.send({ topic, acks: -1, compression, messages });
    sent += messages.length;
    if (acks.some((a) => a.errorCode !== 0)) throw new Error(`${name}: ${JSON.stringify(acks)}`);
  }
  await producer.disconnect();
  return { sent };
}

async function group(topic, groupId, n) {
  const seen = new Map();
  const shares = new Map();
  const member = async (name) => {
    // kafkajs heartbeats between fetches: a 500 ms long-poll (not its 5 s default)
    // lets it notice a rebalance within a second.
    const c = kafka.consumer({
      groupId,
      sessionTimeout: 6000,
      heartbeatInterval: 500,
      rebalanceTimeout: 30000,
      maxWaitTimeInMs: 500,
    });
    c.on(c.events.GROUP_JOIN, (e) => {
      const a = e.payload.memberAssignment[topic] || [];
      shares.set(name, [...a].sort((x, y) => x - y));
    });
    await c.connect();
    await c.subscribe({ topic, fromBeginning: true });
    await c.run({
      eachMessage: async ({ message }) => {
        const v = message.value.toString();
        seen.set(v, (seen.get(v) || 0) + 1);
      },
    });
    return c;
  };
  const settled = (names) => {
    const s = names.map((nm) => shares.get(nm) || []);
    const flat = s.flat().sort((x, y) => x - y);
    return s.every((x) => x.length > 0) && JSON.stringify(flat) === '[0,1,2,3]';
  };
  const a = await member('a');
  const b = await member('b');
  await until('two members sharing every partition and every record read', 60, () => settled(['a', 'b']) && seen.size >= n);
  const two = ['a', 'b'].map((x) => shares.get(x));
  const c = await member('c');
  await until('three shares after a third joined', 60, () => settled(['a', 'b', 'c']));
  const three = ['a', 'b', 'c'].map((x) => shares.get(x));
  await a.disconnect();
  await b.disconnect();
  await until('the last member owning every partition', 60, () => settled(['c']));
  const last = [shares.get('c')];
  await c.disconnect();
  let duplicates = 0;
  for (const v of seen.values()) duplicates += v - 1;
  return { two, three, last, distinct: seen.size, duplicates };
}

async function admin(topic, groupId) {
  const ad = kafka.admin();
  await ad.connect();
  const created = await ad.createTopics({
    topics: [{ topic, numPartitions: 2, replicationFactor: 1, configEntries: [{ name: 'retention.ms', value: '3600000' }] }],
    waitForLeaders: true,
  });
  const listed = (await ad.listTopics()).includes(topic);
  const md = await ad.fetchTopicMetadata({ topics: [topic] });
  const partitions = md.topics[0].partitions.length;
  const configs = await ad.describeConfigs({ resources: [{ type: 2, name: topic, configNames: ['retention.ms'] }] });
  const retention = configs.resources[0].configEntries.find((e) => e.configName === 'retention.ms').configValue;
  await ad.createPartitions({ topicPartitions: [{ topic, count: 3 }] });
  const grown = (await ad.fetchTopicMetadata({ topics: [topic] })).topics[0].partitions.length;
  const groups = (await ad.listGroups()).groups.map((g) => g.groupId);
  const offsets = await ad.fetchOffsets({ groupId, topics: ['ka-src'] });
  const described = await ad.describeGroups([groupId]);
  await ad.deleteTopics({ topics: [topic] });
  await until(`${topic} gone from the topic list`, 30, async () => !(await ad.listTopics()).includes(topic));
  await ad.disconnect();
  return {
    created,
    listed,
    partitions,
    retention,
    grown,
    groups,
    offsets: offsets[0].partitions.map((p) => [p.partition, Number(p.offset)]),
    group_state: described.groups[0].state,
  };
}

(async () => {
  let out;
  if (flow === 'codecs') out = await codecs(args[0], Number(args[1]));
  else if (flow === 'group') out = await group(args[0], args[1], Number(args[2]));
  else if (flow === 'admin') out = await admin(args[0], args[1]);
  else throw new Error(`unknown flow ${flow}`);
  console.log(JSON.stringify(out));
  process.exit(0);
})().catch((e) => {
  console.error(`${flow}: ${e && e.stack ? e.stack : e}`);
  process.exit(1);
});
