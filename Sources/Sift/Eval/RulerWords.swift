/// Word lists for the RULER-style tasks (keys are adjective-noun pairs, as RULER draws them
/// from the wonderwords lists; these lists are sift's own).
enum RulerWords {
    static let adjectives = """
    abundant agreeable ancient brave bright calm careful clever cold curious damp daring deep \
    delicate eager early elegant empty fancy fierce fragile gentle gigantic glossy golden grumpy \
    handsome happy hollow humble icy jolly kind large lively lonely loud lucky magnetic mellow \
    modern narrow nervous noisy odd old orange plain polite proud quick quiet rapid rare rich \
    rough round rustic salty scarce sharp shiny silent silky slow smooth soft sour spicy steady \
    sticky stormy strange sturdy sunny swift tall tame tender thick tidy tiny vast velvet warm \
    wealthy wide wild windy wise wooden young zealous
    """.split(separator: " ").map(String.init)

    static let nouns = """
    anchor apple arrow badge bakery balloon banjo basket beacon bicycle blanket boat bottle \
    bridge bucket button cabin camera candle canyon carpet castle cherry circus cloud compass \
    cottage crayon crystal curtain daisy desert dolphin drum eagle engine falcon feather fence \
    forest fountain garden giraffe glacier guitar hammer harbor helmet island jacket jungle \
    kettle kitten ladder lantern lemon lighthouse magnet maple meadow mirror mountain needle \
    notebook ocean orchard otter oyster paddle parrot pebble pencil pepper piano pillow pirate \
    planet pumpkin puzzle rabbit river rocket saddle sailor scarf shadow shovel spider spoon \
    statue sunlight teapot temple thunder tiger tomato tractor trumpet tunnel turtle umbrella \
    valley violin volcano wagon walnut whistle window wizard yacht zebra
    """.split(separator: " ").map(String.init)

    /// A random adjective-noun key such as "velvet-lantern".
    static func key<R: RandomNumberGenerator>(_ rng: inout R) -> String {
        adjectives.randomElement(using: &rng)! + "-" + nouns.randomElement(using: &rng)!
    }

    /// `count` distinct single words: the lists above first, then made-up words of two or
    /// three consonant-vowel syllables when more are needed.
    static func distinctWords<R: RandomNumberGenerator>(_ count: Int, _ rng: inout R) -> [String] {
        var pool = adjectives + nouns
        var seen = Set(pool)
        let consonants = Array("bcdfghjklmnprstvz"), vowels = Array("aeiou")
        while pool.count < count {
            var w = ""
            for _ in 0..<Int.random(in: 2...3, using: &rng) {
                w.append(consonants.randomElement(using: &rng)!)
                w.append(vowels.randomElement(using: &rng)!)
            }
            if seen.insert(w).inserted { pool.append(w) }
        }
        return EvalRandom.distinct(count, from: pool, &rng)
    }
}
