// Browser-bundle stand-in for the whole of crypto-js: Autobahn's WAMP-CRA (lib/auth/cra.js)
// only uses PBKDF2, HmacSHA256, algo.SHA256 and enc.Base64, so only those are bundled.
const CryptoJS = require("../node_modules/crypto-js/core.js");
require("../node_modules/crypto-js/enc-base64.js");
require("../node_modules/crypto-js/sha256.js");
require("../node_modules/crypto-js/hmac.js");
require("../node_modules/crypto-js/pbkdf2.js");
require("../node_modules/crypto-js/hmac-sha256.js");
module.exports = CryptoJS;
