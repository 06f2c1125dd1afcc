// Browser-bundle stand-in for Node's `crypto`: the bundled tweetnacl and crypto-js ask for it with a
// plain require() when there is no `self.crypto` / `window.crypto` (in Node, importing the browser
// bundle; a Web Worker without crypto).  Web Crypto's getRandomValues (in every browser, Node >= 19
// as globalThis.crypto) is all they need; without this, the ES module bundle threw "Dynamic require
// of crypto is not supported" when imported outside a browser.
const web = globalThis.crypto;
module.exports = {
  getRandomValues: (array) => web.getRandomValues(array),
  randomBytes: (n) => web.getRandomValues(new Uint8Array(n)),
};
