// Two rules of Prisma's CLI the cross-tool tests compare `cargo xtask` with, taken from the
// installed Prisma itself: `node peer.js slug|sort '<JSON array of names>'` prints a JSON array.
//   slug: each name as `prisma migrate dev --name NAME` names its folder (after the timestamp).
//         `migrate dev` needs a shadow database this driver-adapter path cannot give it, so the
//         function is taken from the bundle: Prisma 6.19.3's bundled @sindresorhus/slugify,
//         between two markers of that exact version.
//   sort: the names in the order Prisma lists migration folders (`a.localeCompare(b)`).
const fs = require("fs");
const [command, json] = process.argv.slice(2);
const names = JSON.parse(json);

function prismaSlugify() {
  const bundle = fs.readFileSync(require.resolve("prisma/build/index.js"), "utf8");
  if (!bundle.includes('{name:RF(e,{separator:"_"}).substring(0,200)}')) {
    throw new Error("this Prisma bundle names migrations differently: update peer.js");
  }
  const start = bundle.indexOf("var Zvt=[");
  const end = bundle.indexOf("var OF=G(Qd());", start);
  if (start < 0 || end < 0) throw new Error("slugify not found in the Prisma bundle: update peer.js");
  // The bundle's escape-string-regexp, which the slugify code calls as `L0`.
  const escape = (s) => s.replace(/[|\\{}()[\]^$+*?.]/g, "\\$&").replace(/-/g, "\\x2d");
  const slugify = new Function("L0", bundle.slice(start, end) + "; return RF;")(escape);
  return (name) => slugify(name, { separator: "_" }).substring(0, 200);
}

let result;
if (command === "slug") {
  const slug = prismaSlugify();
  result = names.map(slug);
} else if (command === "sort") {
  result = [...names].sort((a, b) => a.localeCompare(b));
} else {
  throw new Error("usage: node peer.js slug|sort '<JSON array>'");
}
process.stdout.write(JSON.stringify(result));
