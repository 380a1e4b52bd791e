from pkg.registry import register


@register
class Foo:
    value = 1
