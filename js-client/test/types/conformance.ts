// Compiled by `npm run typecheck` (test/types/tsconfig.json): the implementation, src/index.js as
// TypeScript reads its JSDoc, must provide everything zmqwamp.d.ts publishes, with compatible types.
// A declaration the code does not implement (or implements differently) fails here.
import type * as Published from "zmqwamp-client";
import * as implementation from "../../src/index.js";

type Instance<C> = C extends abstract new (...args: never[]) => infer I ? I : never;

// Every export.  The socket and stream classes are exported for `instanceof`, but made only by ctx.Socket()
// or a DEALER socket (private constructors in the declarations), so their construct signatures are
// not compared.
type Classes = "ReqSocket" | "SubSocket" | "DealerSocket" | "PushSocket" | "ReplyStream";
export const conforms: Omit<typeof Published, Classes> = implementation;
export const socketClasses: Function[] = [
  implementation.ReqSocket,
  implementation.SubSocket,
  implementation.DealerSocket,
  implementation.PushSocket,
  implementation.ReplyStream,
];

// Instances: their methods are what users call.
export const context: Published.ZmqContext = {} as Instance<typeof implementation.ZmqContext>;
export const req: Published.ReqSocket = {} as Instance<typeof implementation.ReqSocket>;
export const sub: Published.SubSocket = {} as Instance<typeof implementation.SubSocket>;
export const dealer: Published.DealerSocket = {} as Instance<typeof implementation.DealerSocket>;
export const push: Published.PushSocket = {} as Instance<typeof implementation.PushSocket>;
export const stream: Published.ReplyStream = {} as Instance<typeof implementation.ReplyStream>;
export const error: Published.ZmqError = {} as Instance<typeof implementation.ZmqError>;
