// The part of Autobahn JS (26.x, lib/autobahn.js) that zmqwamp-client uses, for `npm run typecheck`.
// Not published: the package's own declarations are ../zmqwamp.d.ts.
declare module "autobahn" {
  namespace autobahn {
    interface Deferred {
      promise: Promise<unknown>;
      resolve(value?: unknown): void;
      reject(reason?: unknown): void;
    }
    type DeferredFactory = () => Deferred;
    type ErrorHandler = (error: unknown, message?: string) => void;

    interface Serializer {
      SERIALIZER_ID: string;
      BINARY: boolean;
      serialize(obj: unknown): string | Uint8Array;
      unserialize(payload: unknown): unknown;
    }

    /** What a Session drives: Autobahn's transports (lib/transport/websocket.js) have this shape. */
    interface Transport {
      protocol: string | undefined;
      serializer: Serializer;
      info: { type: string; url: string; protocol: string | null };
      send(msg: unknown[]): void;
      close(code?: number, reason?: string): void;
      onmessage(msg: unknown[]): void;
      onopen(): void;
      onclose(details: { code: number; reason: string; wasClean: boolean }): void;
    }

    interface ChallengeExtra {
      challenge: string;
      salt?: string;
      iterations?: number;
      keylen?: number;
    }
    type OnChallenge = (session: Session, method: string, extra: ChallengeExtra) => string | [string, object];

    interface WelcomeDetails {
      authid?: string;
      authrole?: string;
      authmethod?: string;
      realm?: string;
      [key: string]: unknown;
    }

    class Session {
      constructor(
        transport: Transport,
        defer: DeferredFactory,
        onchallenge?: OnChallenge,
        onUserError?: ErrorHandler,
        onInternalError?: ErrorHandler,
      );
      readonly id: number | null;
      readonly isOpen: boolean;
      onjoin: ((details: WelcomeDetails) => void) | undefined;
      onleave: ((reason: string, details: { message?: string; [key: string]: unknown }) => void) | undefined;
      join(realm: string, authmethods?: string[], authid?: string, authextra?: object): void;
      leave(reason?: string, message?: string): void;
      call(procedure: string, args?: unknown[], kwargs?: object, options?: object): Promise<unknown>;
      publish(topic: string, args?: unknown[], kwargs?: object, options?: object): Promise<Publication> | null;
      /** The session's request id sequence (an own property set in the constructor, lib/session.js). */
      _new_request_id(): number;
      subscribe(
        topic: string,
        handler: (args: unknown[] | undefined, kwargs?: object, event?: Event) => void,
        options?: object,
      ): Promise<Subscription>;
      unsubscribe(subscription: Subscription): Promise<unknown>;
    }
    /** What an event handler is told about an EVENT (only the detail keys WAMP defines). */
    class Event {
      readonly publication: number;
      readonly retained: boolean;
    }
    /** What an acknowledged PUBLISH resolves with. */
    class Publication {
      readonly id: number;
    }
    class Subscription {
      readonly topic: string;
    }
    class Result {
      args: unknown[];
      kwargs: Record<string, unknown>;
    }
    /** A WAMP ERROR (not a JavaScript Error). */
    class Error {
      error: string;
      args: unknown[];
      kwargs: Record<string, unknown>;
    }

    const auth_cra: {
      derive_key(secret: string, salt: string, iterations?: number, keylen?: number): string;
      sign(key: string, challenge: string): string;
    };
    const serializer: {
      JSONSerializer: new (
        replacer?: (this: any, key: string, value: unknown) => unknown,
        reviver?: (this: any, key: string, value: unknown) => unknown,
      ) => Serializer;
    };
    const util: {
      deferred_factory(options: { use_es6_promises: boolean }): DeferredFactory;
    };
  }
  export = autobahn;
}
