// Real Prisma 6.19.3 for the cross-tool tests: the schema engine compiled to WebAssembly (it
// ships in the `prisma` npm package) through the `@prisma/adapter-pg` driver adapter.
// Environment: DATABASE_URL, PRISMA_MIGRATIONS_DIR (absolute), optionally DATABASE_SCHEMA.
//
// Three differences of this path from native Prisma are worked around so that it behaves as
// native Prisma does:
// 1. adapter-pg 6.x cannot read result columns of type `name` (prisma issue 27403, fixed in
//    7.x): they are reported as text.
// 2. adapter-pg splits a migration script on every `;` (comments and `DO $$` bodies included)
//    and runs the pieces one by one; native Prisma sends the whole file as one simple-query
//    message, one implicit transaction. `executeScript` does the same here.
// 3. (in schema-engine-standin.js) `resolve --rolled-back` spawns the native engine binary.
// And one for speed: 4. the wasm engine arms a 10 s timer for its advisory-lock wait and never
// clears it, and pg-pool keeps idle connections for 10 s; either keeps node alive (and its
// connection holding `pg_advisory_lock(72707369)`) for 10 s after every deploy or resolve.
import { defineConfig } from "prisma/config";
import { PrismaPg } from "@prisma/adapter-pg";

const url = process.env.DATABASE_URL;
const migrations = process.env.PRISMA_MIGRATIONS_DIR;
if (!url || !migrations) throw new Error("set DATABASE_URL and PRISMA_MIGRATIONS_DIR");

// The prototype in the adapter's class chain that defines `name`.
function owner(obj: any, name: string): any {
  for (let p = obj; p; p = Object.getPrototypeOf(p)) if (Object.prototype.hasOwnProperty.call(p, name)) return p;
  return null;
}

function patch(adapter: any): any {
  // 1. oid 19 (`name`) → 25 (`text`), on the shared base class so transactions get it too.
  const q = owner(adapter, "performIO");
  if (q && !q.__datahubNameFix) {
    const performIO = q.performIO;
    q.performIO = async function (query: any) {
      const result = await performIO.call(this, query);
      for (const field of result?.fields ?? []) if (field.dataTypeID === 19) field.dataTypeID = 25;
      return result;
    };
    q.__datahubNameFix = true;
  }
  // 2. The whole script as one simple query. A separate flag name per patch: a flag set on a
  //    base class would be inherited and leave this one unpatched.
  const s = owner(adapter, "executeScript");
  if (s && !s.__datahubScriptFix) {
    s.executeScript = async function (script: string) {
      try {
        await this.client.query(script);
      } catch (e) {
        this.onError(e);
      }
    };
    s.__datahubScriptFix = true;
  }
  return adapter;
}

// 4. Unref the 10 s timers (allowExitOnIdle below unrefs idle sockets), so the CLI exits as
//    soon as it is done; a contended advisory lock still ends in P1002 after 10 s.
const realSetTimeout = globalThis.setTimeout;
(globalThis as any).setTimeout = function (fn: any, ms?: number, ...args: any[]) {
  const timer: any = (realSetTimeout as any)(fn, ms, ...args);
  if (ms === 10000 && typeof timer?.unref === "function") timer.unref();
  return timer;
};

// adapter-pg 6.x ignores `?schema=` (everything lands in `public`). DATABASE_SCHEMA passes the
// schema as the search_path (quoted; a space escaped for the startup options) and as the
// adapter's own `schema` option.
const schema = process.env.DATABASE_SCHEMA;
const searchPath = schema ? '"' + schema.replace(/"/g, '""') + '"' : undefined;

function adapter(): any {
  const factory: any = new PrismaPg(
    {
      connectionString: url,
      allowExitOnIdle: true,
      ...(searchPath ? { options: "-c search_path=" + searchPath.replace(/\\/g, "\\\\").replace(/ /g, "\\ ") } : {}),
    },
    schema ? { schema } : undefined,
  );
  for (const method of ["connect", "connectToShadowDb"]) {
    const original = factory[method].bind(factory);
    factory[method] = async () => patch(await original());
  }
  return factory;
}

export default defineConfig({
  experimental: { adapter: true },
  engine: "js",
  adapter: async () => adapter(),
  schema: "schema.prisma",
  migrations: { path: migrations },
});
