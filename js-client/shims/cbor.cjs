// Browser-bundle stand-in for node-cbor: zmqwamp-client brings its own CBOR serializer
// (src/serializers.js, cborg), so Autobahn's node-cbor-based one is never used.
const unused = () => {
  throw new Error("node-cbor is not bundled: zmqwamp-client uses cborg");
};
module.exports = { encode: unused, encodeAsync: unused, decodeFirstSync: unused, decode: unused };
