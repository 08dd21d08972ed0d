"""Mutation: prompts, FM answer parsing, and the operators that turn a parent into a child."""
