import { Observable, type Subscriber } from 'rxjs';
import type { Delivery } from './delivery.ts';
import type { DeliveryOperator } from './stream.ts';

/** A stage that takes deliveries, passes them on to its subscriber when it decides, and is closed once. */
export interface QueuedStage {
  add(delivery: Delivery): void;
  /** The stream ended or was unsubscribed: settle or give back what the stage still holds. */
  close(): void;
}

/**
 * An operator over a stage made per subscription (a rate limiter, a Redis lookup): each
 * delivery goes to `stage.add`, and the stage is closed when its input ends, fails or is
 * unsubscribed.
 */
export function queuedStage(create: (subscriber: Subscriber<Delivery>) => QueuedStage): DeliveryOperator {
  return (source) =>
    new Observable<Delivery>((subscriber) => {
      const stage = create(subscriber);
      const subscription = source.subscribe({
        next: (delivery) => stage.add(delivery),
        error: (error: unknown) => {
          stage.close();
          subscriber.error(error);
        },
        complete: () => {
          stage.close();
          subscriber.complete();
        },
      });
      return () => {
        subscription.unsubscribe();
        stage.close();
      };
    });
}
