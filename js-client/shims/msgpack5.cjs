// Browser-bundle stand-in for msgpack5: zmqwamp-client brings its own msgpack serializer
// (src/serializers.js), so Autobahn's msgpack5-based one (which needs Node streams) is never used.
module.exports = function msgpack5() {
  const unused = () => {
    throw new Error("msgpack5 is not bundled: zmqwamp-client uses @msgpack/msgpack");
  };
  return { encode: unused, decode: unused };
};
