export { Topic } from './topic.js';
