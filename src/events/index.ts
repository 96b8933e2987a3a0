export { Topic } from './topic.js';
export {
  LifecycleBus,
  type BusStats,
  type LifecycleBusOptions,
  type SubscribeOptions,
  type Subscription,
} from './bus.js';
