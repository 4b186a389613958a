#!/usr/bin/env node
// `prisma migrate resolve --rolled-back` (6.19.x) spawns the native schema engine as
// `<bin> cli --datasource <url> can-connect-to-database`, a binary only Prisma's own download
// host serves. PRISMA_SCHEMA_ENGINE_BINARY points here: this answers that one sub-command by
// connecting with `pg` (exit 0: the database is reachable) and refuses any other.
const args = process.argv.slice(2);
const fail = (code, message) => {
  process.stderr.write("\n" + JSON.stringify({ level: "ERROR", target: "schema_engine::logger", fields: { error_code: code, message } }) + "\n");
  process.exit(1);
};
if (args[args.length - 1] !== "can-connect-to-database") {
  fail("P1000", "this stand-in answers only `cli can-connect-to-database`, got: " + args.join(" "));
}
const raw = args[args.indexOf("--datasource") + 1] || "";
const url = raw.startsWith("{") ? JSON.parse(raw).url : raw;
const { Client } = require("pg");
const client = new Client({ connectionString: url });
client
  .connect()
  .then(() => client.end())
  .then(
    () => process.exit(0),
    (e) => fail(e.code === "3D000" ? "P1003" : "P1001", String(e.message)),
  );
